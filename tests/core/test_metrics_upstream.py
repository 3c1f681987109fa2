"""The upstream families move with real calls to the stub upstream."""

import itertools
from urllib.parse import urlsplit

import gevent
import pytest
from django.test import override_settings

from project.core import metrics
from project.core.caller import caller_scope
from project.core.deadline import Deadline
from project.core.outbound import call_upstream
from project.core.outbound.client import http_get
from project.core.outbound.pool import count_sockets, get_pool
from project.core.resilience import (
    BreakerConfig,
    BulkheadConfig,
    RetryConfig,
    make_guards,
)
from project.core.status import Status
from tests.metrics_samples import sample

pytestmark = pytest.mark.usefixtures("fresh_pools")

# Each test names its own upstream: meters and breaker gauges are per name.
_names = (f"metrics-test-{n}" for n in itertools.count())


def calls(upstream: str, outcome: str) -> float:
    return sample("gd_upstream_calls_total", upstream=upstream, outcome=outcome)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def call(url: str, guards: dict, timeout_s: float = 2.0) -> Status:
    return call_upstream(
        url,
        parse=lambda response: response.json(),
        deadline=Deadline(5),
        timeout_s=timeout_s,
        **guards,
    ).status


def test_plain_calls_are_counted_by_origin_and_outcome(upstream):
    """http_get without a name: ok, error (a 500) and timeout, by host:port."""
    label = origin(upstream)
    before = {o: calls(label, o) for o in ("ok", "error", "timeout")}
    timed = sample("gd_upstream_call_duration_seconds_count", upstream=label)
    http_get(f"{upstream}/delay?ms=1", timeout=2)
    assert http_get(f"{upstream}/status?code=500", timeout=2).status_code == 500
    with pytest.raises(TimeoutError):
        http_get(f"{upstream}/delay?ms=500", timeout=0.05)
    for outcome in ("ok", "error", "timeout"):
        assert calls(label, outcome) == before[outcome] + 1, outcome
    assert (
        sample("gd_upstream_call_duration_seconds_count", upstream=label) == timed + 3
    )


def test_pooled_sockets_open_and_idle(upstream):
    """A call in flight holds an open socket; afterwards it is open and idle."""
    label = origin(upstream)

    def sockets(state: str) -> float:
        count_sockets()  # what the per-process timer does every second
        return sample("gd_upstream_connections", upstream=label, state=state)

    slow = gevent.spawn(http_get, f"{upstream}/delay?ms=300", timeout=2)
    gevent.sleep(0.1)
    assert (sockets("open"), sockets("idle")) == (1, 0)
    slow.get(timeout=2)
    assert (sockets("open"), sockets("idle")) == (1, 1)


def test_a_full_bulkhead_sheds_and_shows_its_calls_in_use(upstream):
    """Named guards: the slot in use is a gauge, the refused call is shed."""
    name = next(_names)
    guards = make_guards(bulkhead=BulkheadConfig(limit=1), name=name)
    in_use = gevent.spawn(call, f"{upstream}/delay?ms=300", guards)
    gevent.sleep(0.1)
    assert sample("gd_upstream_bulkhead_in_use", upstream=name) == 1
    assert call(f"{upstream}/delay?ms=1", guards) == Status.SHED
    assert in_use.get(timeout=2) == Status.OK
    assert sample("gd_upstream_bulkhead_in_use", upstream=name) == 0
    assert calls(name, "shed") == 1
    assert calls(name, "ok") == 1
    assert sample("gd_upstream_call_duration_seconds_count", upstream=name) == 1


def test_breaker_opens_after_failures_and_refuses(upstream):
    """500s seen by three clients open the upstream's breaker: state 2, one
    transition, then circuit_open for anyone."""
    name = next(_names)
    breaker = BreakerConfig(failure_rate=0.5, window=3, min_calls=2, open_ms=60_000)
    guards = make_guards(breaker=breaker, name=name)
    assert sample("gd_upstream_breaker_state", upstream=name) == 0
    for client in ("a", "b", "c"):
        with caller_scope(client=client):
            assert call(f"{upstream}/status?code=500", guards) == Status.ERROR
    assert sample("gd_upstream_breaker_state", upstream=name) == 2
    assert (
        sample("gd_upstream_breaker_transitions_total", upstream=name, state="open")
        == 1
    )
    assert call(f"{upstream}/delay?ms=1", guards) == Status.CIRCUIT_OPEN
    assert calls(name, "error") == 3
    assert calls(name, "circuit_open") == 1


def test_retries_made_and_refused_by_the_budget(upstream):
    """A budget of one retry: the first failing call retries, the next is refused."""
    name = next(_names)
    retry = RetryConfig(retries=1, backoff_ms=1, budget_reserve=1)
    guards = make_guards(retry=retry, name=name)
    for _ in range(2):
        assert call(f"{upstream}/status?code=503", guards) == Status.ERROR
    assert sample("gd_upstream_retries_total", upstream=name, decision="retried") == 1
    assert sample("gd_upstream_retries_total", upstream=name, decision="refused") == 1
    # Every attempt reached the upstream: two calls, one retried.
    assert calls(name, "error") == 3


def test_a_call_with_no_time_left_is_a_timeout(upstream):
    """Refused before any attempt for want of time: counted as a timeout."""
    name = next(_names)
    guards = make_guards(name=name)
    assert call(f"{upstream}/delay?ms=1", guards, timeout_s=0) == Status.TIMEOUT
    assert calls(name, "timeout") == 1


def test_switched_off_calls_are_not_counted(upstream):
    """METRICS_ENABLED false: a fresh pool has no meter and a call moves nothing."""
    label = origin(upstream)
    before = calls(label, "ok")
    parts = urlsplit(upstream)
    metrics.enabled.cache_clear()  # read once per process: read it again here
    try:
        with override_settings(METRICS_ENABLED=False):
            http_get(f"{upstream}/delay?ms=1", timeout=2)
            assert get_pool("http", parts.hostname or "", parts.port).meter is None
    finally:
        metrics.enabled.cache_clear()
    assert calls(label, "ok") == before


def test_batched_attempts_write_what_observing_each_would():
    """Attempts are written in batches; after a flush the histogram's buckets,
    sum and count equal observing each attempt, and nothing is written before."""
    from prometheus_client import REGISTRY, Histogram

    from project.core.upstream_metrics import upstream_meter

    meter = upstream_meter("batch-check")
    assert meter is not None
    reference = Histogram(
        "batch_check_reference_seconds",
        "reference",
        buckets=metrics.LATENCY_BUCKETS,
        registry=None,
    )
    times = [0.0005, 0.001, 0.05, 0.05, 0.3, 2.0, 100.0]
    for seconds in times:
        meter.call(Status.OK, seconds)
        reference.observe(seconds)
    labels = {"upstream": "batch-check"}
    unflushed = REGISTRY.get_sample_value(
        "gd_upstream_call_duration_seconds_count", labels
    )
    assert not unflushed
    assert sample("gd_upstream_call_duration_seconds_count", **labels) == len(times)
    assert sample("gd_upstream_calls_total", outcome="ok", **labels) == len(times)
    expected = {
        (s.name, s.labels.get("le")): s.value
        for s in reference.collect()[0].samples
        if not s.name.endswith("_created")
    }
    for (name, le), value in expected.items():
        got_name = name.replace("batch_check_reference", "gd_upstream_call_duration")
        got = sample(got_name, **labels, **({"le": le} if le else {}))
        assert got == pytest.approx(value), (name, le)
