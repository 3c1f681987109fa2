"""Aggregations: a registry's sources fetched concurrently under one deadline.

``Aggregator`` is one per worker: it holds the registry and, per upstream,
the resilience state (``sources.SourceRunner``), plus one single-flight table
and the source cache. ``Aggregator.run`` fans the sources out with
``fan_out`` and returns an ``AggregateResult``: the JSON body and the
HTTP status under the response policy (``policy``).

One source, from the outside in: skipped when it needs a parameter that was
not given → fresh cache hit → single-flight (identical calls in flight share
one) → the live call (``sources``: bulkhead → circuit breaker → attempts with
full-jitter retries inside the retry budget, never past the deadline; or a
query) → on failure, a stale cached value if there is one.
"""

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from django.core.cache import BaseCache
from gevent.event import Event

from project.core.deadline import Deadline
from project.core.fanout import Leg, LegResult, describe_error, fan_out
from project.core.metrics import enabled
from project.core.singleflight import SharedCallAbandoned, SingleFlight
from project.core.status import Status

from .cache import SourceCache
from .declarations import Aggregation, ParamValues, Registry, Source
from .meter import AggregationMeter
from .policy import respond
from .results import AggregateResult, SourceResult
from .sources import LiveCall, SourceRunner, UpstreamState, call_timeout

logger = logging.getLogger(__name__)

# A follower retrying alone needs at least this long left.
_MIN_RETRY_ALONE_S = 0.005


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
        self.margin_s = margin_s
        self.sources = SourceRunner(
            registry.upstreams, margin_s=margin_s, rng=rng or random.random
        )
        self.cache = SourceCache(cache)
        self.flights = SingleFlight()
        self.meter = AggregationMeter() if enabled() else None

    @property
    def upstreams(self) -> Mapping[str, UpstreamState]:
        """Each upstream's resilience state in this worker."""
        return self.sources.states

    def run(
        self,
        aggregation: Aggregation,
        values: ParamValues,
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
            Leg(
                source.name,
                self._source_call(aggregation.name, source, values, deadline),
            )
            for source in aggregation.sources
        ]
        outcomes = fan_out(
            legs, deadline=deadline, max_concurrency=len(legs), cancel=cancel
        )
        results = {
            source.name: _result_of(outcome)
            for source, outcome in zip(aggregation.sources, outcomes, strict=True)
        }
        cancelled = cancel is not None and cancel.is_set()
        result = respond(aggregation, results, deadline, cancelled=cancelled)
        if self.meter is not None:
            self.meter.answered(aggregation.name, results, result.body["partial"])
        logger.info(
            "aggregate %s status=%s elapsed_ms=%.1f %s",
            aggregation.name,
            result.status,
            result.body["elapsed_ms"],
            " ".join(
                f"{name}={source.status}/{source.latency_ms:.0f}ms/{source.attempts}"
                for name, source in results.items()
            ),
        )
        return result

    def _source_call(
        self, aggregation: str, source: Source, values: ParamValues, deadline: Deadline
    ) -> Callable[[float], SourceResult]:
        def call(_leg_timeout: float) -> SourceResult:
            started = time.monotonic()
            result = self._fetch_source(aggregation, source, values, deadline)
            result.latency_ms = (time.monotonic() - started) * 1000.0
            return result

        return call

    def _fetch_source(
        self, aggregation: str, source: Source, values: ParamValues, deadline: Deadline
    ) -> SourceResult:
        missing = sorted(source.uses - values.keys())
        if missing:
            return SourceResult(
                Status.SKIPPED, error=f"parameter {missing[0]!r} not given"
            )
        live = self.sources.live_call(source, values, deadline)
        cache_key = self.cache.key_for(source, live.key)
        if cache_key:
            hit = self.cache.fresh(cache_key, source)
            if self.meter is not None:
                self.meter.cache(aggregation, source.name, "hit" if hit else "miss")
            if hit:
                return hit
        result = self._shared_call(aggregation, live, source, deadline)
        if cache_key:
            result = self.cache.settle(cache_key, source, result)
            if self.meter is not None and result.status == Status.STALE:
                self.meter.cache(aggregation, source.name, "stale_served")
        return result

    def _shared_call(
        self, aggregation: str, live: LiveCall, source: Source, deadline: Deadline
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
                    live.key, live.run, timeout=self._wait_limit(source, deadline)
                )
                retry_alone = shared and result.status == Status.TIMEOUT
            except TimeoutError as exc:  # our own wait ran out
                result, shared = SourceResult(Status.TIMEOUT, error=str(exc)), True
            except SharedCallAbandoned as exc:
                error = describe_error(exc)
                result, shared = SourceResult(Status.ERROR, error=error), True
                retry_alone = True
            except Exception as exc:  # the leader's unexpected failure, shared
                error = describe_error(exc)
                result, shared = SourceResult(Status.ERROR, error=error), True
            if shared and self.meter is not None:
                self.meter.joined(aggregation, source.name)
            if (
                not retry_alone
                or self._wait_limit(source, deadline) < _MIN_RETRY_ALONE_S
            ):
                break
        # The leader's result object is handed to every follower: each caller
        # gets its own copy (latency and stale fallback are per caller).
        return replace(result, shared=shared)

    def _wait_limit(self, source: Source, deadline: Deadline) -> float:
        return call_timeout(source.timeout_ms, deadline, self.margin_s)


def _result_of(outcome: LegResult) -> SourceResult:
    if outcome.status == Status.OK:
        result: SourceResult = outcome.value
        return result
    # Killed by fan_out at the deadline, or an unexpected exception.
    status = Status.TIMEOUT if outcome.status == Status.TIMEOUT else Status.ERROR
    return SourceResult(status, error=outcome.error, latency_ms=outcome.elapsed_ms)
