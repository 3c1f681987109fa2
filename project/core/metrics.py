"""The service's Prometheus metrics, shared by every gunicorn worker.

prometheus_client's multiprocess mode: each worker writes its samples to
memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (any
worker) merges them. gunicorn.conf.py makes that directory fresh at start,
before any worker imports prometheus_client (the mode is chosen at import),
and marks a dead worker's live gauges gone in ``child_exit``. Without the
directory (tests, ``manage.py``) the samples stay in this process.

Names follow Prometheus conventions: a ``gd_`` namespace, base units in the
name (``_seconds``, ``_bytes``), ``_total`` on counters, and labels of low
cardinality only: a route name, an upstream or aggregation name from the
configuration, an outcome from ``Status``; never a raw path, a parameter value
or anything else a client sends. Gauges of one worker's state are ``livesum``
(or ``livemax``): a dead worker's share leaves with it.
"""

import bisect
import functools
import os
from collections.abc import Callable

from prometheus_client import REGISTRY as _PROCESS_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .metrics_dir import MULTIPROC_ENV

# Latency buckets, seconds: from a cache hit (1 ms) to the longest deadline.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Waits and loop lag, seconds: most are well under a millisecond.
WAIT_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# --- Requests (project/observability/middleware.py) -----------------------------------
REQUESTS = Counter(
    "gd_http_requests_total",
    "Requests answered, by route name, method and status class (2xx, 4xx, ...).",
    ["route", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "gd_http_request_duration_seconds",
    "Time from the request reaching Django to its answer, by route and method.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "gd_http_requests_in_flight",
    "Requests being handled now.",
    multiprocess_mode="livesum",
)
CLIENT_DISCONNECTS = Counter(
    "gd_http_client_disconnects_total",
    "Requests whose client went away before the answer (logged as 499).",
    ["route"],
)

# --- Database pool and queries (project/core/pg_pool, project/core/sql.py) --
DB_POOL_SIZE = Gauge(
    "gd_db_pool_size",
    "Most connections the pools may hold.",
    multiprocess_mode="livesum",
)
DB_POOL_CONNECTIONS = Gauge(
    "gd_db_pool_connections",
    "Open pooled connections, by state (in_use, idle).",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "gd_db_pool_waiting",
    "Checkouts waiting for a connection now.",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKOUT_WAIT = Histogram(
    "gd_db_pool_checkout_wait_seconds",
    "Time a checkout waited for a connection.",
    buckets=WAIT_BUCKETS,
)
DB_POOL_EVENTS = Counter(
    "gd_db_pool_events_total",
    "Pool events: timeouts, refused (queue full), created, discarded, reclaimed.",
    ["event"],
)
DB_QUERY_DURATION = Histogram(
    "gd_db_query_duration_seconds",
    "Time of one run_query, by outcome (ok, error, timeout).",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
DB_STATEMENT_TIMEOUTS = Counter(
    "gd_db_statement_timeouts_total",
    "Queries cancelled by statement_timeout or a cancel request (SQLSTATE 57014).",
)

# --- Outbound HTTP (project/core/http_*.py, project/core/resilience) ---------
UPSTREAM_CALLS = Counter(
    "gd_upstream_calls_total",
    "Calls to an upstream by outcome (ok, error, timeout, shed, circuit_open).",
    ["upstream", "outcome"],
)
UPSTREAM_CALL_DURATION = Histogram(
    "gd_upstream_call_duration_seconds",
    "Time of one attempt at an upstream.",
    ["upstream"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_CONNECTIONS = Gauge(
    "gd_upstream_connections",
    "Pooled sockets to an upstream by state (open, idle).",
    ["upstream", "state"],
    multiprocess_mode="livesum",
)
UPSTREAM_RETRIES = Counter(
    "gd_upstream_retries_total",
    "Retries made (allowed by the retry budget) and refused by it.",
    ["upstream", "decision"],
)
BREAKER_STATE = Gauge(
    "gd_upstream_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open (the worst worker).",
    ["upstream"],
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS = Counter(
    "gd_upstream_breaker_transitions_total",
    "Breaker state changes, by the state entered.",
    ["upstream", "state"],
)
BULKHEAD_IN_USE = Gauge(
    "gd_upstream_bulkhead_in_use",
    "Calls in flight through an upstream's bulkhead.",
    ["upstream"],
    multiprocess_mode="livesum",
)

# --- Aggregation (project/aggregation) --------------------------------------
AGGREGATION_SOURCES = Counter(
    "gd_aggregation_source_results_total",
    "Source results by aggregation, source and status.",
    ["aggregation", "source", "status"],
)
AGGREGATION_PARTIAL = Counter(
    "gd_aggregation_partial_total",
    "Aggregation answers missing at least one optional source.",
    ["aggregation"],
)
AGGREGATION_CACHE = Counter(
    "gd_aggregation_cache_total",
    "Cache lookups by result (hit, miss, stale_served).",
    ["aggregation", "source", "result"],
)
AGGREGATION_SINGLEFLIGHT_JOINS = Counter(
    "gd_aggregation_singleflight_joins_total",
    "Fetches that joined an identical one already in flight instead of calling.",
    ["aggregation", "source"],
)

# --- Caches (project/core/fallback_cache.py, cache_codec.py) ------------------
CACHE_FALLBACK = Counter(
    "gd_cache_fallback_total",
    "Cache calls served from this worker's memory instead of the shared cache "
    "(Redis): it failed or timed out, or is skipped for a cool-off after that.",
    ["cache", "operation"],
)
CACHE_UNDECODABLE = Counter(
    "gd_cache_undecodable_total",
    "Cached values served as a miss because they were not what the service "
    "writes, by reader: redis or memory (not JSON: a pickle, garbage), "
    "aggregation (JSON, but not a source-cache entry).",
    ["reader"],
)

# --- The event loop and the worker ------------------------------------------
LOOP_LAG = Histogram(
    "gd_event_loop_lag_seconds",
    "How late a periodic timer fired: time the loop was busy with other work.",
    buckets=WAIT_BUCKETS,
)
LOOP_BLOCKED = Counter(
    "gd_event_loop_blocked_total",
    "Episodes of one greenlet holding the loop longer than the monitor threshold.",
)
GREENLETS = Gauge(
    "gd_greenlets",
    "Greenlets at work, estimated: requests being served (the server pools) "
    "plus fan_out legs running; not the loop's own or idle ones.",
    multiprocess_mode="livesum",
)
# --- Admission control (project/core/admission) -----------------------------
ADMISSION_LIMIT = Gauge(
    "gd_admission_limit",
    "Requests the workers may run at once (the adaptive concurrency limits, summed).",
    multiprocess_mode="livesum",
)
ADMISSION_IN_FLIGHT = Gauge(
    "gd_admission_in_flight",
    "Admitted requests running now (exempt routes not counted).",
    multiprocess_mode="livesum",
)
ADMISSION_QUEUED = Gauge(
    "gd_admission_queued",
    "Requests waiting for a slot under the limit now.",
    multiprocess_mode="livesum",
)
ADMISSION_LOOP_BUSY = Gauge(
    "gd_admission_loop_busy_ratio",
    "Share of the last control interval the busiest worker's event loop was "
    "not idle: its CPU congestion signal.",
    multiprocess_mode="livemax",
)
ADMISSION_SHED = Counter(
    "gd_admission_shed_total",
    "Requests refused by admission control, by reason (limit, queue, deadline; "
    "client_gone: the client left while waiting, nothing sent) and route priority.",
    ["reason", "priority"],
)
ADMISSION_NEEDED = Gauge(
    "gd_admission_needed",
    "Concurrency the workers' current mix of routes needs (completion rate x "
    "shortest latency, per route, summed): a saturated CPU caps the limit at twice it.",
    multiprocess_mode="livesum",
)
ADMISSION_DEFERRED = Counter(
    "gd_admission_deferred_total",
    "Refusals deferred by the refusal budget: the request waited on for a slot "
    "or a token (clients retrying at once without honouring Retry-After).",
)
ADMISSION_BORROWED = Counter(
    "gd_admission_borrowed_total",
    "Requests admitted above the limit because their client held less than its "
    "share of the slots while another client held more.",
)
WORKER_RECYCLES = Counter(
    "gd_worker_recycles_total",
    "Workers that exited after max_requests (gunicorn starts a fresh one).",
)


@functools.cache
def enabled() -> bool:
    """Whether instrumented code fills the metrics (``METRICS_ENABLED``, default on).

    Read once per process, lazily: instrumented objects ask when they are
    made, so the hot paths test a held value, never the settings. Tests that
    change the setting call ``enabled.cache_clear()``.
    """
    from django.conf import settings

    if not settings.configured:
        return True
    return bool(getattr(settings, "METRICS_ENABLED", True))


def multiprocess_dir() -> str | None:
    """The shared samples directory when running under gunicorn, else None."""
    path = os.environ.get(MULTIPROC_ENV, "")
    return path if path and os.path.isdir(path) else None


# Called before each exposition: modules that batch their samples write them.
_before_exposition: list[Callable[[], None]] = []


def before_exposition(flush: Callable[[], None]) -> None:
    """Have ``flush`` write its batched samples before every exposition."""
    _before_exposition.append(flush)


def flush_batched() -> None:
    """Write every module's batched samples now (an exposition, the loop
    monitor's once-a-second tick, a worker's exit, tests)."""
    for flush in _before_exposition:
        flush()


class PendingCounter:
    """Increments of one counter child, held as a plain number until ``flush``
    (one locked write to the shared file a flush, not one an increment)."""

    def __init__(self, child: Counter) -> None:
        self.child = child
        self._count = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Count ``amount`` more."""
        self._count += amount

    def flush(self) -> None:
        """Write what was counted since the last flush."""
        if self._count:
            self.child.inc(self._count)
            self._count = 0.0


class PendingHistogram:
    """Observations of one histogram child, held as plain numbers until ``flush``.

    Each write to a multiprocess value takes a lock, checks the pid and packs
    into the shared file (about 1.5 us); ``Histogram.observe`` makes two. Here
    an observation is two additions, and ``flush`` does what ``observe`` does
    (prometheus_client 0.26, pinned: its sum and bucket values) once per
    bucket.
    """

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self._bounds = list(child._upper_bounds)
        self._buckets = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket (the first upper bound at or above it)."""
        self._buckets[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        """Write the observations counted since the last flush."""
        if not any(self._buckets):
            return
        self.child._sum.inc(self._sum)
        for index, count in enumerate(self._buckets):
            if count:
                self.child._buckets[index].inc(count)
                self._buckets[index] = 0
        self._sum = 0.0


def exposition() -> bytes:
    """Every worker's samples, merged, in Prometheus text format."""
    flush_batched()  # this worker's latest samples; the others' within their period
    path = multiprocess_dir()
    if path is None:
        return generate_latest(_PROCESS_REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry)
