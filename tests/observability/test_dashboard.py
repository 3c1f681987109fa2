"""The Grafana dashboard uses only metrics that exist, and shows every family."""

import json
import re

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from project.core import metrics
from tests.helpers import BASE_DIR

DASHBOARD = BASE_DIR / "deploy" / "grafana" / "gevent-django.json"
SUFFIXES = {
    Counter: ("_total",),
    Gauge: ("",),
    Histogram: ("_bucket", "_sum", "_count"),
}


def exposed_names() -> dict[str, str]:
    """Sample name → family, for every metric of project/core/metrics.py."""
    names = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for suffix in SUFFIXES[type(metric)]:
                names[metric._name + suffix] = metric._name
    return names


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_every_name_in_the_dashboard_exists():
    used = {name for expr in dashboard_exprs() for name in re.findall(r"gd_\w+", expr)}
    assert used
    assert used - exposed_names().keys() == set()


def test_every_family_has_a_panel():
    names = exposed_names()
    used = {names.get(n) for e in dashboard_exprs() for n in re.findall(r"gd_\w+", e)}
    assert set(names.values()) - used == set()


def test_histograms_are_read_as_quantiles_of_rates_and_counters_as_rates():
    """A raw counter or bucket graphed as-is is a useless ever-rising line."""
    for expr in dashboard_exprs():
        if "_bucket" in expr:
            assert re.search(r"histogram_quantile\(0\.\d+, sum by \(le", expr), expr
            assert "rate(" in expr, expr
        if "_total" in expr:
            assert "rate(" in expr or "increase(" in expr, expr
