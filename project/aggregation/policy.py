"""The response policy: which sources count, the HTTP status, the JSON body."""

from collections.abc import Mapping

from project.core.deadline import Deadline
from project.core.status import Status

from .declarations import Aggregation
from .results import AggregateResult, SourceResult

# Statuses that leave a source without data.
FAILED = frozenset({Status.TIMEOUT, Status.ERROR, Status.CIRCUIT_OPEN, Status.SHED})
# Statuses whose value is served.
HAS_DATA = frozenset({Status.OK, Status.STALE})
# nginx's "client closed request": nobody reads it; it is logged.
CLIENT_GONE = 499


def respond(
    aggregation: Aggregation,
    results: Mapping[str, SourceResult],
    deadline: Deadline,
    *,
    cancelled: bool,
) -> AggregateResult:
    """The response: status and headers under ``http_status``, and the body.

    ``data`` holds each source's value (or null), ``partial`` says whether
    any source has none, ``sources`` what happened to each.
    """
    status, headers = (
        (CLIENT_GONE, {}) if cancelled else http_status(aggregation, results)
    )
    body = {
        "data": {
            name: result.value if result.status in HAS_DATA else None
            for name, result in results.items()
        },
        "partial": any(result.status in FAILED for result in results.values()),
        "sources": {name: result.meta() for name, result in results.items()},
        "deadline_ms": round(deadline.budget * 1000),
        "elapsed_ms": round(deadline.elapsed_ms(), 1),
    }
    return AggregateResult(status, body, headers)


def http_status(
    aggregation: Aggregation, results: Mapping[str, SourceResult]
) -> tuple[int, dict[str, str]]:
    """The status policy: 200 unless a required source failed.

    A required source that timed out → 504; errored → 502; shed or circuit
    open (no stale fallback) → 503 with ``Retry-After``. When several failed
    the first of 504, 502, 503 wins. Optional failures only mark ``partial``.
    """
    failed: dict[Status, SourceResult] = {
        results[source.name].status: results[source.name]
        for source in aggregation.sources
        if source.required and results[source.name].status in FAILED
    }
    if Status.TIMEOUT in failed:
        return 504, {}
    if Status.ERROR in failed:
        return 502, {}
    if failed:
        wait = max(result.retry_after_s for result in failed.values())
        return 503, {"Retry-After": str(max(1, int(wait + 0.999)))}
    return 200, {}
