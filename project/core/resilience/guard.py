"""Any call to an upstream through its bulkhead, circuit breaker and retry budget.

``guarded_call`` runs the attempts of a call (``project.core.outbound``'s
``call_upstream`` is an HTTP GET through it). From the outside in, each
attempt: no time left before the deadline → refused (``timeout``); no
bulkhead slot for this client → refused (``shed``); the client's or the
upstream's breaker open → refused (``circuit_open``); else the attempt runs
and its outcome is reported to the breakers. An attempt worth repeating is
retried, up to ``RetryConfig.retries`` times, after a full-jitter pause, only
while that pause and a little of an attempt fit before the deadline, and only
within the retry budget. The client is ``caller.current_caller()``'s (one
anonymous client when none is set): the bulkhead's slots and the breaker's
verdicts are shared out by it, so one client cannot fill or open them for the
others.

The bulkhead, breaker and budget are one upstream's state in one process:
make them once per worker (``project.core.per_process.PerProcess``, with
``make_guards``) and pass the same ones to every call to that upstream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypedDict, TypeVar

import gevent

from ..caller import caller_or_anonymous
from ..deadline import Deadline
from ..status import Status
from .breaker import BreakerConfig, UpstreamBreaker
from .bulkhead import Bulkhead, BulkheadConfig
from .retry import RetryBudget, RetryConfig

T = TypeVar("T")

# A retry is only worth it if at least this much of an attempt fits after its pause.
_MIN_ATTEMPT_S = 0.005


class Guards(TypedDict):
    """One upstream's bulkhead, breaker and retry budget, as keyword arguments
    of ``guarded_call`` and ``call_upstream`` (``**guards``)."""

    bulkhead: Bulkhead
    breaker: UpstreamBreaker
    budget: RetryBudget


def make_guards(
    *,
    bulkhead: BulkheadConfig | None = None,
    breaker: BreakerConfig | None = None,
    retry: RetryConfig | None = None,
    name: str | None = None,
) -> Guards:
    """A fresh bulkhead, breaker and retry budget (each config's defaults unless given).

    They are one upstream's state in one process: keep them in a
    ``PerProcess`` and pass the same ones to every call to that upstream.
    ``name`` (the upstream's, from configuration) labels their metrics and
    the calls made through them; unnamed, calls are labelled by origin and
    the guards themselves are not exported.
    """
    return Guards(
        bulkhead=Bulkhead(bulkhead or BulkheadConfig(), name=name),
        breaker=UpstreamBreaker(breaker or BreakerConfig(), name=name),
        budget=RetryBudget(retry or RetryConfig(), name=name),
    )


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one attempt produced, and what it says about the upstream.

    ``healthy`` is the breaker's verdict: True a success, False a failure,
    None no verdict (the fault was ours, not the upstream's). ``retry``: the
    attempt failed in a way another attempt may not.
    """

    value: T
    healthy: bool | None = True
    retry: bool = False


@dataclass(frozen=True)
class Guarded(Generic[T]):
    """The last attempt's value, and how many attempts were made."""

    value: T
    attempts: int


class Refused(Exception):
    """No (further) attempt was let through: no time left, bulkhead full, circuit open.

    ``status`` is ``timeout``, ``shed`` or ``circuit_open``; ``attempts`` counts
    those made before; ``retry_after_s`` suggests when to try again.
    """

    def __init__(
        self,
        status: Status,
        message: str,
        *,
        attempts: int,
        retry_after_s: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.retry_after_s = retry_after_s


def guarded_call(
    attempt: Callable[[float], Outcome[T]],
    *,
    deadline: Deadline,
    bulkhead: Bulkhead,
    breaker: UpstreamBreaker,
    budget: RetryBudget,
    timeout_s: float | None = None,
    margin_s: float = 0.0,
    rng: Callable[[], float] = random.random,
) -> Guarded[T]:
    """Run ``attempt(timeout)`` through the bulkhead, breaker and retry budget.

    Each attempt gets ``min(timeout_s, what is left of the deadline −
    margin_s)``. Raises ``Refused`` when an attempt is not let through. An
    exception from ``attempt`` counts as a failure for the breaker (a
    ``gevent.Timeout`` too; a killed greenlet gives no verdict) and propagates.

    Any client fits; here a query to a service of your own::

        def attempt(timeout: float) -> Outcome[dict]:
            try:
                return Outcome(prices_client.get(sku, timeout=timeout))
            except prices.Unavailable:
                return Outcome({}, healthy=False, retry=True)

        try:
            price = guarded_call(attempt, deadline=deadline, **prices_state.get()).value
        except Refused as refusal:
            raise ApiError(f"prices: {refusal}", status=503) from None
    """
    client = caller_or_anonymous().client
    budget.on_call()
    attempts = 0
    while True:
        timeout = deadline.timeout(timeout_s, margin_s=margin_s)
        if timeout <= 0:
            _count_refused(bulkhead, Status.TIMEOUT)
            raise Refused(
                Status.TIMEOUT, "no time left before the deadline", attempts=attempts
            )
        if not bulkhead.try_acquire(client):
            _count_refused(bulkhead, Status.SHED)
            raise Refused(
                Status.SHED,
                "too many calls in flight",
                attempts=attempts,
                retry_after_s=1.0,
            )
        try:
            outcome = _admitted(attempt, timeout, breaker, client, attempts)
        except Refused as refusal:
            _count_refused(bulkhead, refusal.status)
            raise
        finally:
            bulkhead.release(client)
        attempts += 1
        pause = _retry_pause(outcome.retry, attempts, budget, deadline, margin_s, rng)
        if pause is None:
            return Guarded(outcome.value, attempts)
        gevent.sleep(pause)


def _count_refused(bulkhead: Bulkhead, status: Status) -> None:
    """Count a call not let through, under the guards' name (when named)."""
    if bulkhead.meter is not None:
        bulkhead.meter.calls[status].inc()


def _retry_pause(
    wanted: bool,
    attempts: int,
    budget: RetryBudget,
    deadline: Deadline,
    margin_s: float,
    rng: Callable[[], float],
) -> float | None:
    """Seconds to wait before another attempt, or None when there is none."""
    if not wanted or attempts > budget.config.retries:
        return None
    pause = budget.config.pause(attempts, rng)
    # Never past the deadline: the pause and at least a little of an attempt
    # must fit in what is left.
    if pause + _MIN_ATTEMPT_S >= deadline.timeout(margin_s=margin_s):
        return None
    return pause if budget.try_retry() else None


def _admitted(
    attempt: Callable[[float], Outcome[T]],
    timeout: float,
    breaker: UpstreamBreaker,
    client: str,
    attempts: int,
) -> Outcome[T]:
    """One attempt, if the breaker admits it; its outcome is reported to the breaker."""
    ticket = breaker.allow(client)
    if ticket is None:
        raise Refused(
            Status.CIRCUIT_OPEN,
            "circuit open",
            attempts=attempts,
            retry_after_s=breaker.retry_after(client),
        )
    started = time.monotonic()
    try:
        outcome = attempt(timeout)
    except BaseException as exc:
        # BaseException: a gevent.Timeout (not an Exception) still counts.
        if isinstance(exc, gevent.GreenletExit):
            breaker.abandon(ticket)
        else:
            breaker.record(ticket, ok=False, seconds=time.monotonic() - started)
        raise
    if outcome.healthy is None:
        breaker.abandon(ticket)
    else:
        breaker.record(ticket, ok=outcome.healthy, seconds=time.monotonic() - started)
    return outcome
