"""Run independent legs of IO concurrently in greenlets, under one deadline."""

import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import psycopg2
from django.db import DatabaseError
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from .caller import ANONYMOUS, Caller, activate_caller, current_caller
from .deadline import Deadline, activate
from .fair_share import ClassSlots
from .pg_pool.errors import PoolTimeout
from .request_context import activate_request_id, current_request_id
from .status import Status

logger = logging.getLogger(__name__)

# Legs running now in this process: the event-loop monitor's greenlet estimate
# reads it (a counter, because walking the greenlets would hold the loop).
_legs_in_flight = 0


def legs_in_flight() -> int:
    """Legs of every ``fan_out`` in this process that are running now."""
    return _legs_in_flight


# Legs running at once in this worker, every fan-out together, as slots
# handed out by traffic class and then client by client (``ClassSlots``); a
# fan-out takes a slot before it spawns a leg. As many as one upstream's pool
# has connections (``HTTP_POOL_MAXSIZE``): past that a leg would only wait for
# a connection, as a greenlet with its own timer. Spawned up front, one
# client's 200 fan-outs of 100 ten-second legs made 20,000 greenlets, and
# spawning, then killing, them in bursts held the event loop for seconds
# (/healthz p99 1.4-1.9 s, another client's aggregations p99 3-4 s, with
# admission on or off); now the fan-outs past the client's share wait as one
# greenlet each, and sheddable legs never hold the last quarter of the slots.
_leg_slots: ClassSlots | None = None
# Legs of one request in flight at once, unless the caller says otherwise.
MAX_CONCURRENCY = 100


def leg_slots() -> ClassSlots:
    """This worker's leg slots (sized from settings on first use)."""
    global _leg_slots
    if _leg_slots is None:
        from django.conf import settings

        _leg_slots = ClassSlots(max(1, settings.HTTP_POOL_MAXSIZE))
    return _leg_slots


class _LegTimeout(Exception):
    """Raised inside a leg by its own ``gevent.Timeout``; never escapes a leg."""


@dataclass(frozen=True)
class Leg:
    """One unit of IO: ``call(timeout_seconds)`` returns a JSON-able value.

    A leg reports its own timeouts by raising ``TimeoutError``; any other
    exception marks it as an error. ``timeout`` caps the leg below the deadline.
    """

    name: str
    call: Callable[[float], Any]
    timeout: float | None = None


@dataclass
class LegResult:
    """What became of one leg."""

    name: str
    status: Status
    value: Any = None
    error: str | None = None
    elapsed_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-able dict (``error`` only when set)."""
        data: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }
        if self.value is not None:
            data["value"] = self.value
        if self.error is not None:
            data["error"] = self.error
        return data


def fan_out(
    legs: Sequence[Leg],
    *,
    deadline: Deadline,
    max_concurrency: int | None = None,
    cancel: Event | None = None,
) -> list[LegResult]:
    """Run ``legs`` at once (``max_concurrency`` in flight); return results in order.

    Each leg gets ``min(leg.timeout, deadline.remaining())``: a leg capped by
    its own ``timeout`` is interrupted by a ``gevent.Timeout`` when it overruns
    it, any other at the deadline. Whatever is still running when the
    deadline passes is killed, not just abandoned: ``joinall(timeout=...)`` only
    stops waiting, and an abandoned leg would keep its socket or DB connection.
    Setting ``cancel`` (e.g. the client went away) kills the legs at once too.
    """
    if max_concurrency is None:
        max_concurrency = MAX_CONCURRENCY
    slots = BoundedSemaphore(max(1, max_concurrency))
    budget = leg_slots()
    results: list[LegResult | None] = [None] * len(legs)
    started = time.monotonic()
    request_id = current_request_id()
    caller = current_caller()
    holder = caller or ANONYMOUS  # whose share the legs' slots come from

    # What every leg runs under, set once per fan-out in a context of its own
    # (not a copy of the request's: asgiref's storage, Django's connections and
    # caches among it, rides on contextvars and must not be shared with legs).
    # Each leg starts in a copy, so what a leg sets stays its own; three sets
    # in each new leg were 1.9 us of a spawn's 18, 1.6 % of a W1 worker.
    leg_context = contextvars.Context()
    leg_context.run(_enter_leg_context, deadline, request_id, caller)

    def run(index: int, leg: Leg) -> None:
        global _legs_in_flight
        _legs_in_flight += 1
        try:
            timeout = deadline.timeout(leg.timeout)
            # A leg capped below the deadline needs a timer of its own; one that
            # may run to the deadline is killed there by _join_or_kill, so a
            # timer of its own (1.8 % of a W1 worker) would only fire with it.
            own_timer = leg.timeout is not None and leg.timeout < deadline.timeout()
            results[index] = _run_leg(leg, timeout, time.monotonic(), own_timer)
        finally:
            _legs_in_flight -= 1

    def done(_: gevent.Greenlet) -> None:
        # Linked, not in run's finally: a leg killed before it started
        # (the deadline, a cancel) never runs its finally.
        slots.release()
        budget.release(holder)

    greenlets = []
    for index, leg in enumerate(legs):
        if not _take_slots(slots, budget, holder, deadline, cancel):
            break
        greenlet = gevent.spawn(run, index, leg)
        greenlet.gr_context = leg_context.copy()  # before it first runs
        greenlet.rawlink(done)
        greenlets.append(greenlet)
    _join_or_kill(greenlets, deadline, cancel)
    killed_after_ms = (time.monotonic() - started) * 1000.0
    cancelled = cancel is not None and cancel.is_set()
    reason = "cancelled" if cancelled else "killed at the request deadline"
    unstarted = "cancelled" if cancelled else "no free slot before the deadline"
    return [
        result
        or LegResult(
            leg.name,
            Status.TIMEOUT,
            error=reason if index < len(greenlets) else unstarted,
            elapsed_ms=killed_after_ms,
        )
        for index, (leg, result) in enumerate(zip(legs, results, strict=True))
    ]


def _enter_leg_context(
    deadline: Deadline, request_id: str | None, caller: Caller | None
) -> None:
    activate(deadline)  # a pool checkout in a leg waits no longer than this
    activate_request_id(request_id)  # its logs, queries and calls name the request
    activate_caller(caller)  # its upstream calls take the request's client's share


def _take_slots(
    slots: BoundedSemaphore,
    budget: ClassSlots,
    holder: Caller,
    deadline: Deadline,
    cancel: Event | None,
) -> bool:
    """A slot of the fan-out's own and one of the worker's legs, waiting until
    the deadline (or ``cancel``); False when they did not come in time."""
    if cancel is not None and cancel.is_set():
        return False
    if not slots.acquire(timeout=deadline.remaining()):
        return False
    if budget.try_acquire(holder):
        return True
    waiter = gevent.spawn(budget.acquire, holder)
    if cancel is None:
        waiter.join(timeout=deadline.remaining())
    else:
        gevent.wait([waiter, cancel], count=1, timeout=deadline.remaining())
    if waiter.dead and waiter.successful():
        return True
    waiter.kill()  # a slot granted meanwhile is given back by acquire itself
    slots.release()
    return False


def _join_or_kill(
    greenlets: list[gevent.Greenlet], deadline: Deadline, cancel: Event | None
) -> None:
    """Wait for ``greenlets`` until the deadline (or ``cancel``); kill the rest."""
    if cancel is None:
        gevent.joinall(greenlets, timeout=deadline.remaining())
    else:
        joiner = gevent.spawn(gevent.joinall, greenlets, timeout=deadline.remaining())
        gevent.wait([joiner, cancel], count=1)
        joiner.kill()
    unfinished = [greenlet for greenlet in greenlets if not greenlet.dead]
    if unfinished:
        # A blocking kill lets each leg's finally run: connections released,
        # queries cancelled.
        gevent.killall(unfinished, block=True, timeout=5)


def _run_leg(
    leg: Leg, timeout: float, leg_started: float, own_timer: bool
) -> LegResult:
    def elapsed() -> float:
        return (time.monotonic() - leg_started) * 1000.0

    if timeout <= 0:
        return LegResult(
            leg.name, Status.TIMEOUT, error="no time left before the deadline"
        )
    try:
        if own_timer:
            with gevent.Timeout(timeout, _LegTimeout):
                value = leg.call(timeout)
        else:
            value = leg.call(timeout)
    except (_LegTimeout, TimeoutError) as exc:
        message = str(exc) or f"no answer within {timeout * 1000:.0f} ms"
        return LegResult(leg.name, Status.TIMEOUT, error=message, elapsed_ms=elapsed())
    except Exception as exc:
        logger.info("leg %s failed: %r", leg.name, exc)
        return LegResult(
            leg.name, Status.ERROR, error=describe_error(exc), elapsed_ms=elapsed()
        )
    return LegResult(leg.name, Status.OK, value=value, elapsed_ms=elapsed())


def describe_error(exc: Exception) -> str:
    """``Type: first line of the message`` (for a leg's ``error`` field).

    A database driver's message names hosts and socket paths: clients get
    "database unavailable" (the full message is in the log).
    """
    if isinstance(exc, DatabaseError | psycopg2.Error) and not isinstance(
        exc, PoolTimeout
    ):
        return f"{type(exc).__name__}: database unavailable"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
