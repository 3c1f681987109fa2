"""A run's windows turned into resource figures (loadtests.harness.observe)."""

import pytest

from loadtests.harness import observe
from loadtests.harness.scrape import Sample


def samples() -> list[Sample]:
    """One sample a second from t = 100 s; worker CPU at 0.5 then 1.5 cores."""
    out, used = [], 0.0
    for t in range(100, 111):
        out.append(Sample(float(t), None, {1: used}))
        used += 0.5 if t < 105 else 1.5
    return out


def test_steps_and_steady_window_on_the_recorders_clock():
    """Windows in steady.json are relative to its clock; steps lose their ramp."""
    result = {
        "clock": 100.0,
        "window": [5.0, 10.0],
        "steps": [
            {"users": 10, "start": 0.0, "end": 5.0},
            {"users": 20, "start": 5.0, "end": 10.0},
            {"users": 30, "start": 10.0},  # never ended: no figures
        ],
    }
    observe.add_step_figures(samples(), result, 2.0, cores=2.0, limit=100.0)
    first, second, third = result["steps"]
    assert first["resources"]["cpu_util"] == pytest.approx(0.25)
    assert second["resources"]["cpu_util"] == pytest.approx(0.75)
    assert first["resources"]["metrics"] is False
    assert second["resources"]["utilisation"]["cpu"] == pytest.approx(0.75)
    assert "resources" not in third
    steady = observe.steady_figures(samples(), result, cores=2.0, limit=100.0)
    assert steady["cpu_util"] == pytest.approx(0.75)
    assert observe.steady_figures(samples(), {}, cores=2.0, limit=1.0) is None
    line = observe.summary(steady)
    assert line == "resources: workers at 75 % CPU; no metrics; saturated: nothing"


def test_upstream_limit():
    """HTTP_POOL_MAXSIZE x workers; unset, the server's default for this process."""
    assert observe.upstream_limit({"HTTP_POOL_MAXSIZE": "8"}, 2) == 16
    default = observe.upstream_limit({"WORKER_CONNECTIONS": "50"}, 3)
    assert 3 * 16 <= default <= 3 * 50
