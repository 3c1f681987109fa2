"""Request metrics move with traffic: counts, durations, in flight, disconnects."""

import gevent
import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse
from django.test import RequestFactory, override_settings
from django.urls import resolve

from project.core import metrics
from project.observability import loop
from project.observability.middleware import RequestMetricsMiddleware
from tests.metrics_samples import sample as value


def requests(route: str, method: str = "GET", status: str = "2xx") -> float:
    labels = {"route": route, "method": method, "status": status}
    return value("gd_http_requests_total", **labels)


def test_counts_by_route_name_method_and_status_class(client):
    before = {
        "healthz": requests("healthz"),
        "unmatched": requests("unmatched", status="4xx"),
        "other": requests("healthz", "other", "4xx"),
        "head": requests("healthz", "HEAD"),
    }
    for _ in range(3):
        client.get("/healthz")
    client.get("/no/such/path/123")
    client.generic("PROPFIND", "/healthz")
    client.head("/healthz")
    assert requests("healthz") - before["healthz"] == 3
    # A scan of random paths is one series, never one per path.
    assert requests("unmatched", status="4xx") - before["unmatched"] == 1
    assert requests("healthz", "other", "4xx") - before["other"] == 1
    assert requests("healthz", "HEAD") - before["head"] == 1


def test_route_is_the_pattern_name_not_the_path(client):
    """Two spellings of one pattern, with different queries: one series."""
    labels = {"route": "demo-delay", "method": "GET", "status": "2xx"}
    name = "gd_http_request_duration_seconds_count"
    before = value(name, **labels)
    client.get("/demo/delay/?ms=1")
    client.get("/demo/delay?ms=2")
    assert value(name, **labels) - before == 2


def test_durations_are_observed_in_seconds(client):
    labels = {"route": "demo-delay", "method": "GET", "status": "2xx"}
    before = value("gd_http_request_duration_seconds_sum", **labels)
    client.get("/demo/delay/?ms=120")
    elapsed = value("gd_http_request_duration_seconds_sum", **labels) - before
    assert 0.12 <= elapsed < 1.0


def test_in_flight_counts_running_requests_and_returns_to_zero(client):
    """Two slow requests in flight at once, then none; a scrape never counts."""
    base = value("gd_http_requests_in_flight")
    running = [gevent.spawn(client.get, "/demo/delay/?ms=300") for _ in range(2)]
    gevent.sleep(0.15)
    assert value("gd_http_requests_in_flight") - base == 2
    gevent.joinall(running, timeout=5, raise_error=True)
    assert value("gd_http_requests_in_flight") == base
    client.get("/metrics")
    assert value("gd_http_requests_in_flight") == base


def test_a_499_counts_as_a_client_disconnect():
    """The aggregation view answers 499 when the client went away."""
    request = RequestFactory().get("/api/aggregate/product/?id=1")
    request.resolver_match = resolve("/api/aggregate/product/")
    middleware = RequestMetricsMiddleware(lambda request: HttpResponse(status=499))
    before = value("gd_http_client_disconnects_total", route="aggregate")
    middleware(request)
    assert value("gd_http_client_disconnects_total", route="aggregate") - before == 1
    assert requests("aggregate", status="4xx") >= 1


def test_an_escaping_exception_counts_as_a_5xx():
    def fail(request):
        raise RuntimeError("boom")

    before = requests("unmatched", status="5xx")
    with pytest.raises(RuntimeError):
        RequestMetricsMiddleware(fail)(RequestFactory().get("/x"))
    assert requests("unmatched", status="5xx") - before == 1


@pytest.fixture
def metrics_disabled():
    metrics.enabled.cache_clear()
    with override_settings(METRICS_ENABLED=False):
        yield
    metrics.enabled.cache_clear()


def test_disabled_metrics_take_the_middleware_out_and_start_no_monitor(
    metrics_disabled,
):
    assert metrics.enabled() is False
    with pytest.raises(MiddlewareNotUsed):
        RequestMetricsMiddleware(lambda request: HttpResponse())
    assert loop.start() is None


def test_enabled_is_read_once_per_process(settings):
    metrics.enabled.cache_clear()
    assert metrics.enabled() is True
    settings.METRICS_ENABLED = False
    assert metrics.enabled() is True  # cached: hot paths ask on every call
    metrics.enabled.cache_clear()
