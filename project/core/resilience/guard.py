"""One call to an upstream through its bulkhead, circuit breaker and retry budget.

``guarded_call`` runs the attempts of any call; ``call_upstream`` is an HTTP
GET through it. From the outside in, each attempt: no time left before the
deadline → refused (``timeout``); no bulkhead slot for this client → refused
(``shed``); the client's or the upstream's breaker open → refused
(``circuit_open``); else the attempt runs and its outcome is reported to the
breakers. An attempt worth repeating is retried, up to
``RetryConfig.retries`` times, after a full-jitter pause, only while that
pause and a little of an attempt fit before the deadline, and only within
the retry budget. The client is ``caller.current_caller()``'s (one anonymous
client when none is set): the bulkhead's slots and the breaker's verdicts are
shared out by it, so one client cannot fill or open them for the others.

The bulkhead, breaker and budget are one upstream's state in one process:
make them once per worker (``project.core.per_process.PerProcess``) and pass
the same ones to every call to that upstream. In a view of your own::

    from project.core.per_process import PerProcess
    from project.core.resilience import (
        BreakerConfig, BulkheadConfig, RetryConfig, call_upstream, make_guards,
    )
    from project.core.status import Status

    users = PerProcess(lambda: make_guards(
        bulkhead=BulkheadConfig(limit=50),
        breaker=BreakerConfig(slow_call_ms=300),
        retry=RetryConfig(retries=2),
    ))

    result = call_upstream(
        "http://users.internal/users/7",
        deadline=deadline,
        timeout_s=0.3,
        parse=lambda response: response.json(),
        **users.get(),
    )
    if result.status != Status.OK:
        raise ApiError(f"users: {result.error}", status=502)
    user = result.value
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypedDict, TypeVar

import gevent

# http_client imports this package (for single-flight), so take the module,
# not its names: they are looked up at call time, once both are loaded.
from .. import http_client
from ..caller import caller_or_anonymous
from ..deadline import DEADLINE_HEADER, Deadline
from ..http_wire import UpstreamProtocolError
from ..status import Status
from .breaker import BreakerConfig, UpstreamBreaker
from .bulkhead import Bulkhead, BulkheadConfig
from .retry import RetryBudget, RetryConfig

T = TypeVar("T")

# Upstream answers worth another attempt (the call is an idempotent GET).
RETRY_STATUSES = frozenset({500, 502, 503, 504})
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
        timeout = deadline.remaining() - margin_s
        if timeout_s is not None:
            timeout = min(timeout_s, timeout)
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
    if pause + _MIN_ATTEMPT_S >= deadline.remaining() - margin_s:
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


@dataclass(frozen=True)
class UpstreamResult(Generic[T]):
    """What became of one ``call_upstream``: a status, and the value or the error."""

    status: Status
    value: T | None = None
    error: str | None = None
    attempts: int = 0
    retry_after_s: float = 0.0


def call_upstream(
    url: str,
    *,
    parse: Callable[[http_client.Response], T],
    deadline: Deadline,
    bulkhead: Bulkhead,
    breaker: UpstreamBreaker,
    budget: RetryBudget,
    timeout_s: float | None = None,
    margin_s: float = 0.0,
    headers: Mapping[str, str] | None = None,
    rng: Callable[[], float] = random.random,
) -> UpstreamResult[T]:
    """GET ``url`` through ``guarded_call``; a 2xx answer's value: ``parse(response)``.

    Each attempt sends what is left of it as ``X-Request-Timeout-Ms``.
    Connection errors, timeouts and 500/502/503/504 answers are retried; an
    answer that broke HTTP or our limits is not (it would again). A 4xx is
    the request's fault, not a failure for the breaker. A ``ValueError`` from
    ``parse`` (``UpstreamInvalidJSON`` is one) is an ``error`` and a failure.
    No redirect is followed: a 3xx is an ``error``. Trouble never raises: it
    is in the result's ``status`` and ``error``.
    """

    def attempt(timeout: float) -> Outcome[UpstreamResult[T]]:
        return _http_attempt(url, timeout, headers or {}, parse, bulkhead.name)

    try:
        guarded = guarded_call(
            attempt,
            deadline=deadline,
            bulkhead=bulkhead,
            breaker=breaker,
            budget=budget,
            timeout_s=timeout_s,
            margin_s=margin_s,
            rng=rng,
        )
    except Refused as refusal:
        return UpstreamResult(
            refusal.status,
            error=str(refusal),
            attempts=refusal.attempts,
            retry_after_s=refusal.retry_after_s,
        )
    return replace(guarded.value, attempts=guarded.attempts)


def _http_attempt(
    url: str,
    timeout: float,
    headers: Mapping[str, str],
    parse: Callable[[http_client.Response], T],
    upstream: str | None,
) -> Outcome[UpstreamResult[T]]:
    sent = {**headers, DEADLINE_HEADER: str(max(1, int(timeout * 1000)))}
    try:
        response = http_client.http_get(
            url, timeout=timeout, headers=sent, upstream=upstream
        )
    except http_client.LocalSocketsExhausted as exc:
        # Our worker is out of sockets: not the upstream's fault.
        shed = UpstreamResult[T](Status.SHED, error=str(exc), retry_after_s=1.0)
        return Outcome(shed, healthy=None)
    except TimeoutError as exc:
        # http_get's own timeout; a gevent.Timeout is an outer scope's and
        # must reach it.
        return Outcome(
            UpstreamResult[T](Status.TIMEOUT, error=str(exc)), healthy=False, retry=True
        )
    except ConnectionError as exc:
        # An answer that broke HTTP or our limits would do so again.
        again = not isinstance(exc, UpstreamProtocolError)
        failed = UpstreamResult[T](Status.ERROR, error=f"ConnectionError: {exc}")
        return Outcome(failed, healthy=False, retry=again)
    code = response.status_code
    if code >= 300:
        # A 4xx is the request's fault, not the upstream's health.
        failed = UpstreamResult[T](Status.ERROR, error=f"upstream answered {code}")
        return Outcome(failed, healthy=code < 500, retry=code in RETRY_STATUSES)
    try:
        value = parse(response)
    except ValueError as exc:
        return Outcome(UpstreamResult[T](Status.ERROR, error=str(exc)), healthy=False)
    return Outcome(UpstreamResult(Status.OK, value=value))
