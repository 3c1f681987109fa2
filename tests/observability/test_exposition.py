"""What /metrics exposes: every family of project/core/metrics.py, in text format."""

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from project.core import metrics


def declared_families() -> dict[str, str]:
    """Family name → type of every metric declared in project/core/metrics.py."""
    return {
        value._name: value._type
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
    }


def test_every_declared_family_is_exposed_with_its_help_and_type(client):
    response = client.get("/metrics")
    exposed = {
        family.name: family.type
        for family in text_string_to_metric_families(response.content.decode())
    }
    declared = declared_families()
    assert len(declared) >= 20
    assert {name: exposed.get(name) for name in declared} == declared


def test_exposed_samples_carry_the_request_just_made(client):
    """A request's own labels: route name, folded method, status class."""
    client.get("/healthz")
    text = client.get("/metrics").content.decode()
    assert 'gd_http_requests_total{method="GET",route="healthz",status="2xx"}' in text
    assert 'gd_http_request_duration_seconds_bucket{le="0.001",' in text
