"""The adaptive concurrency limit: additive increase, multiplicative decrease.

Once per control interval the gate says whether the worker was congested (its
event loop busy past the target, or a standing line at the database pool) and
whether the limit was binding (requests waited or were refused, or, with no
work piling up, half of it or more ran: the gate's reading). Congested: the
limit drops below the busiest in-flight count seen, so it bites at once even
when it had drifted far above it. Binding and not congested: it grows by a
fraction of itself, so a worker full of cheap slow requests (thousands of
upstream waits) reaches its ``maximum`` within seconds. Neither: it stays put,
as Netflix's concurrency-limits does for an application-limited caller (no
evidence that more would be served).
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitConfig:
    """Bounds and step sizes of the limit."""

    minimum: int = 4
    maximum: int = 1000
    # Congested: limit = min(limit, peak in flight) x backoff.
    backoff: float = 0.9
    # Binding and not congested: limit grows by this fraction (at least 1).
    growth: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(
                f"the limit's minimum ({self.minimum}) must be from 1 to its "
                f"maximum ({self.maximum})"
            )
        if not 0.0 < self.backoff < 1.0:
            raise ValueError(f"backoff must be between 0 and 1, got {self.backoff}")
        if not 0.0 < self.growth <= 1.0:
            raise ValueError(f"growth must be in (0, 1], got {self.growth}")


class AdaptiveLimit:
    """How many requests a worker runs at once; starts at the maximum."""

    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self.value = config.maximum

    def update(
        self,
        *,
        congested: bool,
        binding: bool,
        peak_in_flight: int,
        floor: int = 0,
        cap: int | None = None,
    ) -> int:
        """Apply one interval's verdict and return the new limit.

        A decrease stops at ``floor`` (a limit already below it stays); the
        result is at most ``cap`` (and at least the minimum).
        """
        cfg = self.config
        if congested:
            base = min(self.value, max(peak_in_flight, cfg.minimum))
            lowered = max(cfg.minimum, math.floor(base * cfg.backoff))
            self.value = max(lowered, min(floor, self.value))
        elif binding:
            step = max(1, math.floor(self.value * cfg.growth))
            self.value = min(cfg.maximum, self.value + step)
        if cap is not None:
            self.value = max(cfg.minimum, min(self.value, cap))
        return self.value
