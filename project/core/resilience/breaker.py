"""A circuit breaker that never holds a lock across the call, and counts timeouts.

pybreaker holds a lock for the duration of the protected call, which under
gevent serialises every caller of an upstream. Here the call happens outside
the breaker: ``allow()`` admits it and returns a ticket, ``record()`` reports
how it went. Both only touch plain attributes without yielding to the hub, so
greenlets cannot interleave inside them and no lock is needed at all.

The caller must report every outcome, including ``gevent.Timeout`` (a
``BaseException`` that ``except Exception`` misses): a timeout is a failure
and a slow call.

States: closed (calls flow; the last ``window`` outcomes are kept) → open when,
with at least ``min_calls`` in the window, the failure rate or the slow-call
rate reaches its threshold → after ``open_ms`` half-open: up to
``half_open_probes`` probes are let through; as many successes close the
breaker, any failure opens it again.
"""

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..upstream_metrics import upstream_meter

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """When a breaker opens, and for how long (see the module docstring)."""

    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_ms: int = 1000
    window: int = 20
    # At most ``window``: the rates are judged over that many calls.
    min_calls: int = 10
    open_ms: int = 5000
    half_open_probes: int = 1


class CircuitBreaker:
    """Failure-rate and slow-call-rate breaker over a count-based window."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.state = CLOSED
        # ``name`` (the upstream's) exports the state and its transitions.
        self.name = name
        self.meter = upstream_meter(name)
        if self.meter is not None:
            self.meter.breaker_made()
        # Bumped on every state change: outcomes of calls admitted under an
        # earlier state are ignored (a slow call from before the trip must not
        # close or reopen the breaker).
        self.generation = 0
        self.opened_at = 0.0
        self.window: deque[tuple[bool, bool]] = deque(maxlen=config.window)
        self.failures = 0
        self.slow = 0
        self.probes = 0
        self.probe_successes = 0
        self.rejected = 0

    def allow(self) -> int | None:
        """Admit a call: return a ticket for ``record``, or None if it must not run."""
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.config.open_ms / 1000.0:
                self.rejected += 1
                return None
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self.probes >= self.config.half_open_probes:
                self.rejected += 1
                return None
            self.probes += 1
        return self.generation

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 if not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.config.open_ms / 1000.0 - self.clock())

    def record(self, ticket: int, *, ok: bool, seconds: float) -> None:
        """Report an admitted call's outcome (``ok`` False for errors and timeouts)."""
        if ticket != self.generation:
            return
        slow = seconds * 1000.0 >= self.config.slow_call_ms
        if self.state == HALF_OPEN:
            self.probes -= 1
            if not ok or slow:
                self._move(OPEN)
                return
            self.probe_successes += 1
            if self.probe_successes >= self.config.half_open_probes:
                self._move(CLOSED)
            return
        if len(self.window) == self.window.maxlen:
            old_failed, old_slow = self.window[0]
            self.failures -= old_failed
            self.slow -= old_slow
        self.window.append((not ok, slow))
        self.failures += not ok
        self.slow += slow
        calls = len(self.window)
        if calls >= self.config.min_calls and (
            self.failures / calls >= self.config.failure_rate
            or self.slow / calls >= self.config.slow_call_rate
        ):
            self._move(OPEN)

    def abandon(self, ticket: int) -> None:
        """The admitted call was killed from outside: no verdict on the upstream."""
        if ticket == self.generation and self.state == HALF_OPEN:
            self.probes -= 1

    def _move(self, state: str) -> None:
        self.state = state
        if self.meter is not None:
            self.meter.breaker_moved(state)
        self.generation += 1
        self.probes = 0
        self.probe_successes = 0
        if state == OPEN:
            self.opened_at = self.clock()
        if state == CLOSED:
            self.window.clear()
            self.failures = self.slow = 0
