"""Retry helpers: full-jitter backoff and a retry budget."""

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..upstream_metrics import upstream_meter


@dataclass(frozen=True)
class RetryConfig:
    """Retries of one upstream: how many, their backoff, the budget bounding them."""

    retries: int = 0
    backoff_ms: int = 20
    backoff_max_ms: int = 1000
    # Retries may add at most this share of the calls...
    budget_ratio: float = 0.1
    # ...plus this many.
    budget_reserve: int = 10

    def pause(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``attempt`` (1-based), with full jitter."""
        return full_jitter(
            attempt,
            base_s=self.backoff_ms / 1000.0,
            cap_s=self.backoff_max_ms / 1000.0,
            rng=rng,
        )


def full_jitter(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry ``attempt`` (1-based): U(0, min(cap, base·2^(attempt-1))).

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter")
    spreads the retries of many callers instead of synchronising them.
    """
    return rng() * min(cap_s, base_s * 2 ** (attempt - 1))


class RetryBudget:
    """Retries may add at most ``budget_ratio`` of the calls, plus ``budget_reserve``.

    A token bucket (as in Finagle's RetryBudget): every first attempt deposits
    ``ratio`` tokens, every retry withdraws one, and the balance never exceeds
    ``reserve`` (so a long healthy spell does not bank a retry storm). Under a
    failing upstream retries therefore stay at about ``ratio`` of the calls.
    The budget also carries the rest of its ``RetryConfig`` (how many retries
    one call may make, and their backoff), so one object describes the retries.
    """

    def __init__(self, config: RetryConfig, *, name: str | None = None) -> None:
        self.config = config
        # ``name`` (the upstream's) exports the retries made and refused.
        self.name = name
        self.meter = upstream_meter(name)
        self.ratio = config.budget_ratio
        self.cap = max(float(config.budget_reserve), 1.0)
        self.tokens = float(config.budget_reserve)
        self.calls = 0
        self.retries = 0
        self.refused = 0

    def on_call(self) -> None:
        """Record a first attempt."""
        self.calls += 1
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def try_retry(self) -> bool:
        """Withdraw a token for one retry; False (counted) when the budget is spent."""
        if self.tokens < 1.0:
            self.refused += 1
            if self.meter is not None:
                self.meter.retry_refused.inc()
            return False
        self.tokens -= 1.0
        self.retries += 1
        if self.meter is not None:
            self.meter.retried.inc()
        return True
