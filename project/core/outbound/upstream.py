"""An HTTP GET to an upstream through its guards: ``call_upstream``.

The attempts run through ``resilience.guarded_call`` (bulkhead, breakers,
retry budget, the deadline); each sends what is left of it as
``X-Request-Timeout-Ms``. In a view of your own::

    from project.core.per_process import PerProcess
    from project.core.outbound import call_upstream
    from project.core.resilience import (
        BreakerConfig, BulkheadConfig, RetryConfig, make_guards,
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from ..deadline import DEADLINE_HEADER, Deadline
from ..resilience import (
    Bulkhead,
    Outcome,
    Refused,
    RetryBudget,
    UpstreamBreaker,
    guarded_call,
)
from ..status import Status
from .client import LocalSocketsExhausted, Response, http_get
from .wire import UpstreamProtocolError

T = TypeVar("T")

# Upstream answers worth another attempt (the call is an idempotent GET).
RETRY_STATUSES = frozenset({500, 502, 503, 504})


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
    parse: Callable[[Response], T],
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
    parse: Callable[[Response], T],
    upstream: str | None,
) -> Outcome[UpstreamResult[T]]:
    sent = {**headers, DEADLINE_HEADER: str(max(1, int(timeout * 1000)))}
    try:
        response = http_get(url, timeout=timeout, headers=sent, upstream=upstream)
    except LocalSocketsExhausted as exc:
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
