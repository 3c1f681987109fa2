"""Aggregations: a registry's sources fetched concurrently under one deadline.

``Aggregator`` is one per worker: it holds the registry and, per upstream,
the resilience state (bulkhead, circuit breaker, retry budget), plus one
single-flight table and per-source counters. ``Aggregator.run`` fans the
sources out with ``fan_out`` and returns an ``AggregateResult``: the JSON body
and the HTTP status under the status policy (``http_status``).

One source, from the outside in: skipped when it needs a parameter that was
not given → fresh cache hit → single-flight (identical calls in flight share
one) → bulkhead → circuit breaker → attempts with full-jitter retries inside
the retry budget, never past the deadline → on failure, a stale cached value
if there is one.
"""

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

import gevent
from django.core.cache import BaseCache
from gevent.event import Event

from .deadline import DEADLINE_HEADER, Deadline
from .fanout import Leg, LegResult, describe_error, fan_out
from .http_client import LocalSocketsExhausted, Response, UpstreamInvalidJSON, http_get
from .http_wire import UpstreamProtocolError
from .registry import PLACEHOLDER, Aggregation, Query, Registry, Source, Upstream
from .resilience.breaker import CircuitBreaker
from .resilience.bulkhead import Bulkhead
from .resilience.retry import RetryBudget, full_jitter
from .resilience.singleflight import SharedCallAbandoned, SingleFlight
from .sql import run_query, with_own_connection

logger = logging.getLogger(__name__)

OK = "ok"
TIMEOUT = "timeout"
ERROR = "error"
CIRCUIT_OPEN = "circuit_open"
SHED = "shed"
STALE = "stale"
SKIPPED = "skipped"
# Statuses that leave a source without data.
FAILED = (TIMEOUT, ERROR, CIRCUIT_OPEN, SHED)
# Upstream answers worth another attempt (the call is an idempotent GET).
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class _SourceTimeout(Exception):
    """Raised by a source's own ``gevent.Timeout``; never escapes the source."""


@dataclass
class SourceResult:
    """What became of one source in one request."""

    status: str
    value: Any = None
    attempts: int = 0
    error: str | None = None
    latency_ms: float = 0.0
    age_s: float | None = None
    shared: bool = False
    cache_hit: bool = False
    retry_after_s: float = 0.0

    def meta(self) -> dict[str, Any]:
        """The ``sources`` entry of the response."""
        meta: dict[str, Any] = {
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "attempts": self.attempts,
        }
        if self.error is not None:
            meta["error"] = self.error
        if self.age_s is not None:
            meta["age_s"] = round(self.age_s, 1)
        if self.shared:
            meta["shared"] = True
        if self.cache_hit:
            meta["cache"] = "hit"
        return meta


@dataclass
class AggregateResult:
    """The response of one aggregation: HTTP status, headers and JSON body."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class UpstreamState:
    """One upstream's resilience state in this worker."""

    bulkhead: Bulkhead
    breaker: CircuitBreaker
    budget: RetryBudget


@dataclass
class SourceStats:
    """Per-source counters in this worker (for logs and, later, metrics)."""

    statuses: Counter = field(default_factory=Counter)
    attempts: int = 0
    latency_ms_total: float = 0.0
    latency_ms_max: float = 0.0

    def add(self, result: SourceResult) -> None:
        """Count one request's result for this source."""
        self.statuses[result.status] += 1
        self.attempts += result.attempts
        self.latency_ms_total += result.latency_ms
        self.latency_ms_max = max(self.latency_ms_max, result.latency_ms)


class Aggregator:
    """Runs a registry's aggregations; one per worker (state is per process)."""

    def __init__(
        self,
        registry: Registry,
        *,
        cache: BaseCache,
        margin_s: float = 0.01,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self.cache = cache
        self.margin_s = margin_s
        self.jitter_kwargs = {"rng": rng} if rng else {}
        self.upstreams = {
            name: UpstreamState(
                bulkhead=Bulkhead(upstream.bulkhead),
                breaker=CircuitBreaker(upstream.breaker),
                budget=RetryBudget(
                    ratio=upstream.retry_budget, reserve=upstream.retry_reserve
                ),
            )
            for name, upstream in registry.upstreams.items()
        }
        self.flights = SingleFlight()
        self.stats: dict[tuple[str, str], SourceStats] = {}

    # --- one request -----------------------------------------------------------

    def run(
        self,
        aggregation: Aggregation,
        values: Mapping[str, Any],
        deadline: Deadline,
        *,
        cancel: Event | None = None,
    ) -> AggregateResult:
        """Fetch every source of ``aggregation`` at once and build the response.

        Sources stop ``margin_s`` before the deadline, so a stale fallback and
        the response still fit; ``fan_out`` kills anything left at the deadline,
        or as soon as ``cancel`` is set (the client went away: status 499).
        """
        legs = [
            Leg(source.name, self._source_call(source, values, deadline))
            for source in aggregation.sources
        ]
        outcomes = fan_out(
            legs, deadline=deadline, max_concurrency=len(legs), cancel=cancel
        )
        results = {
            source.name: self._result_of(outcome)
            for source, outcome in zip(aggregation.sources, outcomes, strict=True)
        }
        for source in aggregation.sources:
            key = (aggregation.name, source.name)
            self.stats.setdefault(key, SourceStats()).add(results[source.name])
        return self._respond(
            aggregation, results, deadline, cancel is not None and cancel.is_set()
        )

    def _result_of(self, outcome: LegResult) -> SourceResult:
        if outcome.status == "ok":
            return outcome.value
        # Killed by fan_out at the deadline, or an unexpected exception.
        status = TIMEOUT if outcome.status == "timeout" else ERROR
        return SourceResult(status, error=outcome.error, latency_ms=outcome.elapsed_ms)

    def _respond(
        self,
        aggregation: Aggregation,
        results: dict[str, SourceResult],
        deadline: Deadline,
        cancelled: bool,
    ) -> AggregateResult:
        # 499 (nginx's "client closed request"): nobody reads it; it is logged.
        status, headers = (499, {}) if cancelled else http_status(aggregation, results)
        body = {
            "data": {
                name: result.value if result.status in (OK, STALE) else None
                for name, result in results.items()
            },
            "partial": any(result.status in FAILED for result in results.values()),
            "sources": {name: result.meta() for name, result in results.items()},
            "deadline_ms": round(deadline.budget * 1000),
            "elapsed_ms": round(deadline.elapsed_ms(), 1),
        }
        logger.info(
            "aggregate %s status=%s elapsed_ms=%.1f %s",
            aggregation.name,
            status,
            body["elapsed_ms"],
            " ".join(
                f"{name}={result.status}/{result.latency_ms:.0f}ms/{result.attempts}"
                for name, result in results.items()
            ),
        )
        return AggregateResult(status, body, headers)

    # --- one source ------------------------------------------------------------

    def _source_call(
        self, source: Source, values: Mapping[str, Any], deadline: Deadline
    ) -> Callable[[float], SourceResult]:
        def call(_leg_timeout: float) -> SourceResult:
            started = time.monotonic()
            result = self._fetch_source(source, values, deadline)
            result.latency_ms = (time.monotonic() - started) * 1000.0
            return result

        return call

    def _fetch_source(
        self, source: Source, values: Mapping[str, Any], deadline: Deadline
    ) -> SourceResult:
        missing = sorted(source.uses - values.keys())
        if missing:
            return SourceResult(SKIPPED, error=f"parameter {missing[0]!r} not given")
        if source.upstream:
            upstream = self.registry.upstreams[source.upstream]
            target = _http_target(upstream, source, values)
            key: tuple = ("http", upstream.name, target)

            def live() -> SourceResult:
                return self._fetch_http(upstream, source, target, deadline)

        else:
            query = self.registry.queries[source.sql]
            args = [values[name] for name in query.params]
            key = ("sql", query.name, repr(args))

            def live() -> SourceResult:
                return self._fetch_sql(query, source, args, deadline)

        cache_key = _cache_key(key) if source.cache_ttl_s else None
        if cache_key:
            entry = self.cache.get(cache_key)
            if entry and time.time() - entry["at"] < source.cache_ttl_s:
                return SourceResult(OK, value=entry["value"], cache_hit=True)
        result = self._shared_call(key, live, source, deadline)
        if cache_key:
            if result.status == OK:
                self.cache.set(
                    cache_key,
                    {"value": result.value, "at": time.time()},
                    timeout=source.cache_ttl_s + source.stale_ttl_s,
                )
            elif result.status in FAILED:
                entry = self.cache.get(cache_key)
                if entry:
                    result.status, result.value = STALE, entry["value"]
                    result.age_s = time.time() - entry["at"]
        return result

    def _shared_call(
        self,
        key: tuple,
        live: Callable[[], SourceResult],
        source: Source,
        deadline: Deadline,
    ) -> SourceResult:
        """Run ``live`` through single-flight; returns this caller's own copy.

        A follower whose leader timed out on a shorter deadline, or was
        stopped (its client went away), tries once more, as a leader if no
        other call is in flight, while its own deadline leaves time.
        """
        for _ in range(2):
            retry_alone = False
            try:
                result, shared = self.flights.do(
                    key, live, timeout=self._budget(source, None, deadline)
                )
                retry_alone = shared and result.status == TIMEOUT
            except TimeoutError as exc:  # our own wait ran out
                result, shared = SourceResult(TIMEOUT, error=str(exc)), True
            except SharedCallAbandoned as exc:
                result, shared = SourceResult(ERROR, error=describe_error(exc)), True
                retry_alone = True
            except Exception as exc:  # the leader's unexpected failure, shared
                result, shared = SourceResult(ERROR, error=describe_error(exc)), True
            if not retry_alone or self._budget(source, None, deadline) < 0.005:
                break
        # The leader's result object is handed to every follower: each caller
        # gets its own copy (latency and stale fallback are per caller).
        return replace(result, shared=shared)

    def _budget(self, source: Source, cap_ms: int | None, deadline: Deadline) -> float:
        """A call's timeout: the source's (or ``cap_ms``) within the deadline margin."""
        cap = source.timeout_ms or cap_ms
        remaining = deadline.remaining() - self.margin_s
        return remaining if cap is None else min(cap / 1000.0, remaining)

    def _fetch_http(
        self, upstream: Upstream, source: Source, target: str, deadline: Deadline
    ) -> SourceResult:
        state = self.upstreams[upstream.name]
        state.budget.on_call()
        attempts = 0
        while True:
            timeout = self._budget(source, upstream.timeout_ms, deadline)
            if timeout <= 0:
                return SourceResult(
                    TIMEOUT, attempts=attempts, error="no time left before the deadline"
                )
            if not state.bulkhead.try_acquire():
                return SourceResult(
                    SHED,
                    attempts=attempts,
                    error="too many calls in flight",
                    retry_after_s=1.0,
                )
            try:
                ticket = state.breaker.allow()
                if ticket is None:
                    return SourceResult(
                        CIRCUIT_OPEN,
                        attempts=attempts,
                        error="circuit open",
                        retry_after_s=state.breaker.retry_after(),
                    )
                attempts += 1
                result, retriable = self._attempt_http(
                    upstream, target, timeout, state.breaker, ticket
                )
            finally:
                state.bulkhead.release()
            result.attempts = attempts
            if not retriable or attempts > upstream.retries:
                return result
            pause = full_jitter(
                attempts,
                base_s=upstream.backoff_ms / 1000.0,
                cap_s=upstream.backoff_max_ms / 1000.0,
                **self.jitter_kwargs,
            )
            # Never past the deadline: the pause and at least a little of an
            # attempt must fit in what is left.
            if pause + 0.005 >= deadline.remaining() - self.margin_s:
                return result
            if not state.budget.try_retry():
                return result
            gevent.sleep(pause)

    def _attempt_http(
        self,
        upstream: Upstream,
        target: str,
        timeout: float,
        breaker: CircuitBreaker,
        ticket: int,
    ) -> tuple[SourceResult, bool]:
        """One call; returns (result, worth retrying). Reports to the breaker."""
        headers = {
            **upstream.headers,
            DEADLINE_HEADER: str(max(1, int(timeout * 1000))),
        }
        started = time.monotonic()
        try:
            response = http_get(
                upstream.base_url + target, timeout=timeout, headers=headers
            )
        except BaseException as exc:
            # BaseException: a gevent.Timeout (not an Exception) still counts.
            if isinstance(exc, gevent.GreenletExit):
                breaker.abandon(ticket)
                raise
            if isinstance(exc, LocalSocketsExhausted):
                # Our worker is out of sockets: not the upstream's fault.
                breaker.abandon(ticket)
                return SourceResult(SHED, error=str(exc), retry_after_s=1.0), False
            breaker.record(ticket, ok=False, seconds=time.monotonic() - started)
            # http_get's own timeout is a TimeoutError; a gevent.Timeout is an
            # outer scope's and must reach it.
            if isinstance(exc, TimeoutError):
                return SourceResult(TIMEOUT, error=str(exc)), True
            if isinstance(exc, ConnectionError):
                # An answer that broke HTTP or our limits would do so again.
                again = not isinstance(exc, UpstreamProtocolError)
                return SourceResult(ERROR, error=f"ConnectionError: {exc}"), again
            raise
        elapsed = time.monotonic() - started
        if response.status_code >= 500:
            breaker.record(ticket, ok=False, seconds=elapsed)
            return (
                SourceResult(ERROR, error=f"upstream answered {response.status_code}"),
                response.status_code in RETRY_STATUSES,
            )
        if response.status_code >= 300:
            # A 4xx is the request's fault, not the upstream's health; nothing
            # follows redirects.
            breaker.record(ticket, ok=True, seconds=elapsed)
            return SourceResult(
                ERROR, error=f"upstream answered {response.status_code}"
            ), False
        try:
            value = _body(response)
        except UpstreamInvalidJSON as exc:
            breaker.record(ticket, ok=False, seconds=elapsed)
            return SourceResult(ERROR, error=str(exc)), False
        breaker.record(ticket, ok=True, seconds=elapsed)
        return SourceResult(OK, value=value), False

    def _fetch_sql(
        self, query: Query, source: Source, args: list[Any], deadline: Deadline
    ) -> SourceResult:
        timeout = self._budget(source, query.timeout_ms, deadline)
        if timeout <= 0:
            return SourceResult(TIMEOUT, error="no time left before the deadline")
        try:
            # The gevent timeout also bounds waiting for a pooled connection;
            # statement_timeout stops the query on the server.
            with gevent.Timeout(timeout, _SourceTimeout):
                rows = with_own_connection(
                    lambda: run_query(query.sql, args, timeout=timeout, as_dicts=True)
                )
        except (TimeoutError, _SourceTimeout):
            return SourceResult(
                TIMEOUT, attempts=1, error=f"no answer within {timeout * 1000:.0f} ms"
            )
        except Exception as exc:
            # Details (hosts, SQL) go to the log, not to clients.
            logger.warning("query %s failed: %r", query.name, exc)
            return SourceResult(
                ERROR, attempts=1, error=f"query failed ({type(exc).__name__})"
            )
        return SourceResult(OK, value=rows, attempts=1)

    def source_stats(self) -> dict[str, dict[str, Any]]:
        """Counters per ``aggregation.source`` in this worker."""
        return {
            f"{aggregation}.{source}": {
                "statuses": dict(stats.statuses),
                "attempts": stats.attempts,
                "latency_ms_total": round(stats.latency_ms_total, 1),
                "latency_ms_max": round(stats.latency_ms_max, 1),
            }
            for (aggregation, source), stats in self.stats.items()
        }


def http_status(
    aggregation: Aggregation, results: Mapping[str, SourceResult]
) -> tuple[int, dict[str, str]]:
    """The status policy: 200 unless a required source failed.

    A required source that timed out → 504; errored → 502; shed or circuit
    open (no stale fallback) → 503 with ``Retry-After``. When several failed
    the first of 504, 502, 503 wins. Optional failures only mark ``partial``.
    """
    failed = {
        results[source.name].status: results[source.name]
        for source in aggregation.sources
        if source.required and results[source.name].status in FAILED
    }
    if TIMEOUT in failed:
        return 504, {}
    if ERROR in failed:
        return 502, {}
    if failed:
        wait = max(result.retry_after_s for result in failed.values())
        return 503, {"Retry-After": str(max(1, int(wait + 0.999)))}
    return 200, {}


def _http_target(upstream: Upstream, source: Source, values: Mapping[str, Any]) -> str:
    """Path and query with the parameters filled in, each value URL-encoded."""
    path = PLACEHOLDER.sub(
        lambda match: quote(str(values[match.group(1)]), safe=""), source.path
    )
    query = [
        (key, PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template))
        for key, template in source.query_args
    ]
    return f"{path}?{urlencode(query)}" if query else path


def _body(response: Response) -> Any:
    """JSON (strictly; ``UpstreamInvalidJSON`` when broken) or text, by content type."""
    if "json" in response.headers.get("Content-Type", ""):
        return response.json()
    return response.text


def _cache_key(key: tuple) -> str:
    return "agg:" + hashlib.sha256(repr(key).encode()).hexdigest()
