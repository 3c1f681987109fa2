"""Per-source counters in this worker (for logs and, later, metrics)."""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from project.core.status import Status

from .results import SourceResult


@dataclass
class SourceStats:
    """One source's counters."""

    statuses: Counter[Status] = field(default_factory=Counter)
    attempts: int = 0
    latency_ms_total: float = 0.0
    latency_ms_max: float = 0.0

    def add(self, result: SourceResult) -> None:
        """Count one request's result for this source."""
        self.statuses[result.status] += 1
        self.attempts += result.attempts
        self.latency_ms_total += result.latency_ms
        self.latency_ms_max = max(self.latency_ms_max, result.latency_ms)


class StatsTable:
    """Counters of every source of every aggregation run in this worker."""

    def __init__(self) -> None:
        self.by_source: dict[tuple[str, str], SourceStats] = {}

    def add(self, aggregation: str, results: Mapping[str, SourceResult]) -> None:
        """Count one request's results."""
        for source, result in results.items():
            key = (aggregation, source)
            self.by_source.setdefault(key, SourceStats()).add(result)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Counters per ``aggregation.source``."""
        return {
            f"{aggregation}.{source}": {
                "statuses": dict(stats.statuses),
                "attempts": stats.attempts,
                "latency_ms_total": round(stats.latency_ms_total, 1),
                "latency_ms_max": round(stats.latency_ms_max, 1),
            }
            for (aggregation, source), stats in self.by_source.items()
        }
