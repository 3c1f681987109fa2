"""What became of one source, and of one aggregation request."""

from dataclasses import dataclass, field
from typing import Any

from project.core.status import Status


@dataclass
class SourceResult:
    """What became of one source in one request."""

    status: Status
    # Parsed JSON, text, or SQL rows as objects: whatever the source answered.
    value: Any = None
    attempts: int = 0
    error: str | None = None
    latency_ms: float = 0.0
    age_s: float | None = None
    shared: bool = False
    cache_hit: bool = False
    retry_after_s: float = 0.0

    def meta(self) -> dict[str, Any]:
        """The ``sources`` entry of the response."""
        meta: dict[str, Any] = {
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "attempts": self.attempts,
        }
        if self.error is not None:
            meta["error"] = self.error
        if self.age_s is not None:
            meta["age_s"] = round(self.age_s, 1)
        if self.shared:
            meta["shared"] = True
        if self.cache_hit:
            meta["cache"] = "hit"
        return meta


@dataclass
class AggregateResult:
    """The response of one aggregation: HTTP status, headers and JSON body."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
