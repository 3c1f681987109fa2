"""The counters one pool keeps: gauges, totals and a checkout-wait histogram."""

from dataclasses import asdict, dataclass, field
from typing import Any

# Milliseconds; the upper bounds of the checkout-wait histogram.
WAIT_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


@dataclass
class PoolStats:
    """Gauges (size, in_use, idle, waiting) and totals for one pool."""

    size: int
    in_use: int = 0
    idle: int = 0
    waiting: int = 0
    checkouts: int = 0
    timeouts: int = 0
    rejected: int = 0
    created: int = 0
    discarded: int = 0
    reclaimed: int = 0
    resets: int = 0
    checks: int = 0
    wait_ms_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(WAIT_BUCKETS_MS) + 1)
    )
    wait_ms_sum: float = 0.0

    def observe_wait(self, ms: float) -> None:
        """Count one checkout that waited ``ms`` milliseconds."""
        self.wait_ms_sum += ms
        for index, bound in enumerate(WAIT_BUCKETS_MS):
            if ms <= bound:
                self.wait_ms_buckets[index] += 1
                return
        self.wait_ms_buckets[-1] += 1

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as a dict (for logs and metrics)."""
        return asdict(self)
