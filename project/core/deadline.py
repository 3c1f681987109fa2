"""Request deadlines: one budget per request, split into per-leg timeouts."""

import time

from .errors import ApiError

DEADLINE_HEADER = "X-Request-Timeout-Ms"


class Deadline:
    """A point in time by which the work for one request must be finished."""

    def __init__(self, seconds: float) -> None:
        self.budget = seconds
        self.started = time.monotonic()
        self.expires = self.started + seconds

    @classmethod
    def from_ms(cls, ms: int) -> "Deadline":
        """Return a deadline ``ms`` milliseconds from now."""
        return cls(ms / 1000.0)

    def remaining(self) -> float:
        """Return the seconds left, never negative."""
        return max(0.0, self.expires - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0

    def leg_timeout(self, cap: float | None = None) -> float:
        """Return a leg's timeout: ``min(cap, remaining)``."""
        remaining = self.remaining()
        return remaining if cap is None else min(cap, remaining)

    def elapsed_ms(self) -> float:
        """Return milliseconds since the deadline was set."""
        return (time.monotonic() - self.started) * 1000.0


def deadline_from_header(
    value: str | None, *, default_ms: int, max_ms: int
) -> Deadline:
    """Build a request's deadline from ``X-Request-Timeout-Ms`` (or the default).

    A client may shorten its deadline up to ``max_ms``; anything that is not a
    positive integer is a 400 naming the header.
    """
    if value is None or value.strip() == "":
        return Deadline.from_ms(default_ms)
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= max_ms:
        raise ApiError(
            f"{DEADLINE_HEADER} must be an integer between 1 and {max_ms}",
            param=DEADLINE_HEADER,
        )
    return Deadline.from_ms(int(text))
