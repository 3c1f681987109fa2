"""Request deadlines: one budget per request, split into per-leg timeouts."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Carries a deadline in milliseconds: clients send it to us, we send it upstream.
DEADLINE_HEADER = "X-Request-Timeout-Ms"
# The longest deadline a client may ask for; nginx's proxy timeouts in deploy/
# sit above it, so the app answers its own 504 first.
MAX_DEADLINE_MS = 60000


class Deadline:
    """A point in time by which the work for one request must be finished."""

    def __init__(self, seconds: float, *, started: float | None = None) -> None:
        self.budget = seconds
        self.started = time.monotonic() if started is None else started
        self.expires = self.started + seconds

    @classmethod
    def from_ms(cls, ms: int, *, started: float | None = None) -> "Deadline":
        """Return a deadline ``ms`` milliseconds after ``started`` (default: now)."""
        return cls(ms / 1000.0, started=started)

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


# The deadline of the work this greenlet does, for code far below the view that
# must not wait longer (a pool checkout). Greenlets start with an empty context,
# so fan-out legs set their own.
_current: ContextVar["Deadline | None"] = ContextVar("deadline", default=None)


def current_deadline() -> "Deadline | None":
    """Return the deadline this greenlet works under, if any."""
    return _current.get()


def activate(deadline: Deadline) -> None:
    """Make ``deadline`` this greenlet's current deadline (until its scope ends)."""
    _current.set(deadline)


# When the server had read the request (monotonic clock), set by the gunicorn
# worker: time spent waiting for admission counts against the deadline.
_arrived: ContextVar[float | None] = ContextVar("arrived", default=None)


def mark_arrival(at: float) -> None:
    """Record when this greenlet's current request arrived."""
    _arrived.set(at)


def arrival() -> float | None:
    """When this greenlet's current request arrived (None: not under gunicorn)."""
    return _arrived.get()


@contextmanager
def deadline_scope(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """Run a block under ``deadline``; the previous one is restored afterwards."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
