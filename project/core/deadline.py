"""Request deadlines: one per request, read once at the edge, narrowed below.

The server edge (the gunicorn worker; the middleware outside gunicorn) reads a
request's ``X-Request-Timeout-Ms`` with ``request_deadline``, the one parser,
and the result is this greenlet's current deadline for the request. A view
may narrow it (``Deadline.narrowed``), never widen it; any wait or call below
takes ``Deadline.timeout``: what is left, less a margin, capped.
"""

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Carries a deadline in milliseconds: clients send it to us, we send it upstream.
DEADLINE_HEADER = "X-Request-Timeout-Ms"

# The header's whole grammar: 1 to 9 ASCII digits. Nine digits hold any
# REQUEST_DEADLINE_MAX_MS, and the length is checked before int() (slow on
# thousands of digits, refused past 4,300).
_TIMEOUT_MS = re.compile(r"[0-9]{1,9}")
# HTTP's optional whitespace around a field value.
_OWS = " \t"


class Deadline:
    """A point in time by which the work for one request must be finished."""

    def __init__(
        self, seconds: float, *, started: float | None = None, requested: bool = False
    ) -> None:
        self.budget = seconds
        self.started = time.monotonic() if started is None else started
        self.expires = self.started + seconds
        # Whether the client asked for this deadline (X-Request-Timeout-Ms)
        # rather than getting the default.
        self.requested = requested

    @classmethod
    def from_ms(
        cls, ms: int, *, started: float | None = None, requested: bool = False
    ) -> "Deadline":
        """Return a deadline ``ms`` milliseconds after ``started`` (default: now)."""
        return cls(ms / 1000.0, started=started, requested=requested)

    def narrowed(self, ms: int) -> "Deadline":
        """This deadline, or one ``ms`` after the same start if that is sooner."""
        if ms / 1000.0 >= self.budget:
            return self
        return Deadline.from_ms(ms, started=self.started, requested=self.requested)

    def remaining(self) -> float:
        """Return the seconds left, never negative."""
        return max(0.0, self.expires - time.monotonic())

    def timeout(self, cap_s: float | None = None, *, margin_s: float = 0.0) -> float:
        """Seconds a call or wait under this deadline may take: what is left
        less ``margin_s``, at most ``cap_s``; never negative (0: no time)."""
        left = max(0.0, self.expires - time.monotonic() - margin_s)
        return left if cap_s is None else min(cap_s, left)

    def elapsed_ms(self) -> float:
        """Return milliseconds since the deadline was set."""
        return (time.monotonic() - self.started) * 1000.0


class InvalidTimeout(ValueError):
    """An ``X-Request-Timeout-Ms`` value outside the grammar; says what is allowed."""


def parse_timeout_ms(value: str | None, *, max_ms: int) -> int | None:
    """The milliseconds an ``X-Request-Timeout-Ms`` value asks for; None if not sent.

    The one grammar, at the edge and everywhere: 1 to 9 ASCII digits (leading
    zeros allowed) worth 1 to ``max_ms``, optional spaces or tabs around them.
    An empty value counts as not sent. Anything else raises ``InvalidTimeout``:
    a sign (``+100``, ``-1``), ``0``, decimals, exponents (``1e3``), spaces
    inside, non-ASCII digits, repeated headers (joined by commas) and values
    over ``max_ms`` (a client asking for more is told, not silently cut short).
    """
    if value is None:
        return None
    text = value.strip(_OWS)
    if not text:
        return None
    if _TIMEOUT_MS.fullmatch(text) is not None:
        ms = int(text)
        if 0 < ms <= max_ms:
            return ms
    raise InvalidTimeout(f"{DEADLINE_HEADER} must be an integer between 1 and {max_ms}")


def request_deadline(value: str | None, *, arrived: float | None) -> Deadline:
    """A request's deadline from its ``X-Request-Timeout-Ms`` ``value``.

    The one place for the bounds: ``REQUEST_DEADLINE_MS`` after ``arrived``
    (monotonic clock; None: now) when the header is not sent, its milliseconds
    when they are 1 to ``REQUEST_DEADLINE_MAX_MS``, ``InvalidTimeout`` otherwise.
    """
    # Here, not at the top: the gunicorn master imports this module (through
    # the worker class) and must stay Django-free.
    from django.conf import settings

    ms = parse_timeout_ms(value, max_ms=settings.REQUEST_DEADLINE_MAX_MS)
    if ms is None:
        return Deadline.from_ms(settings.REQUEST_DEADLINE_MS, started=arrived)
    return Deadline.from_ms(ms, started=arrived, requested=True)


# The deadline of the work this greenlet does, for code far below the view that
# must not wait longer (a pool checkout). Greenlets start with an empty context,
# so fan-out legs set their own.
_current: ContextVar["Deadline | None"] = ContextVar("deadline", default=None)


def current_deadline() -> "Deadline | None":
    """Return the deadline this greenlet works under, if any."""
    return _current.get()


def active_deadline() -> Deadline:
    """The deadline this greenlet works under: a view's, as the middleware
    (``RequestDeadlineMiddleware``) activated it or the view narrowed it."""
    deadline = _current.get()
    if deadline is None:
        raise RuntimeError("no active deadline (is RequestDeadlineMiddleware on?)")
    return deadline


def activate(deadline: Deadline) -> None:
    """Make ``deadline`` this greenlet's current deadline (until its scope ends)."""
    _current.set(deadline)


@contextmanager
def deadline_scope(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """Run a block under ``deadline``; the previous one is restored afterwards."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
