"""Route priorities from SHED_ROUTES."""

import pytest

from project.core.route_priority import Priority, RoutePriorities
from settings.knobs.admission import DEFAULT_ROUTES


def test_default_rules():
    """Probes and metrics are exempt, aggregation critical, demo sheddable."""
    routes = RoutePriorities.parse(DEFAULT_ROUTES)
    assert routes.priority("/healthz") is Priority.EXEMPT
    assert routes.priority("/readyz") is Priority.EXEMPT
    assert routes.priority("/metrics") is Priority.EXEMPT
    assert routes.priority("/api/aggregate/prices/") is Priority.CRITICAL
    assert routes.priority("/demo/fan-out/") is Priority.SHEDDABLE
    assert routes.priority("/example/product/") is Priority.NORMAL


def test_longest_prefix_wins():
    """A more specific rule overrides a broader one, whatever the order."""
    routes = RoutePriorities.parse("/demo/delay/=critical, /demo/=sheddable")
    assert routes.priority("/demo/delay/") is Priority.CRITICAL
    assert routes.priority("/demo/fan-out/") is Priority.SHEDDABLE


@pytest.mark.parametrize(
    "raw", ["/demo", "demo/=sheddable", "/demo/=important", "/demo/=", "=critical"]
)
def test_malformed_rules_are_refused(raw):
    """A rule that is not '/prefix=priority' raises ValueError quoting it."""
    with pytest.raises(ValueError, match="SHED_ROUTES"):
        RoutePriorities.parse(raw)
