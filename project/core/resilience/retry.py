"""Retry helpers: full-jitter backoff and a retry budget."""

import random
from collections.abc import Callable


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
    """Retries may add at most ``ratio`` of the calls, plus a small ``reserve``.

    A token bucket (as in Finagle's RetryBudget): every first attempt deposits
    ``ratio`` tokens, every retry withdraws one, and the balance never exceeds
    ``reserve`` (so a long healthy spell does not bank a retry storm). Under a
    failing upstream retries therefore stay at about ``ratio`` of the calls.
    """

    def __init__(self, *, ratio: float, reserve: int) -> None:
        self.ratio = ratio
        self.cap = max(float(reserve), 1.0)
        self.tokens = float(reserve)
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
            return False
        self.tokens -= 1.0
        self.retries += 1
        return True
