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


def test_figures_without_pids_say_cpu_not_sampled():
    """A target without --server-pids: worker CPU is unknown and said to be."""
    bare = [Sample(float(t), None, {}, (t * 1.0, t * 2.0)) for t in range(100, 111)]
    result = {"clock": 100.0, "window": [2.0, 8.0]}
    figures = observe.steady_figures(bare, result, cores=2.0, limit=None)
    assert figures["cpu_util"] is None and figures["proxy_cpu_cores"] is None
    assert figures["utilisation"]["upstream_pool"] is None
    assert observe.summary(figures) == (
        "resources: worker CPU not sampled, host 50 % busy; no metrics; "
        "saturated: nothing"
    )
    assert observe.workers_seen(bare) == 0 and observe.workers_seen(samples()) == 1
    assert observe.upstream_limit(None, 2) is None


def test_step_figures_count_proxy_cpu_per_request():
    """A step's proxy CPU ms per request counts refusals: they pass the proxy too."""
    proxied = [
        Sample(float(t), None, {}, None, {9: 0.1 * (t - 100)}) for t in range(100, 111)
    ]
    result = {
        "clock": 100.0,
        "steps": [
            {
                "users": 10,
                "start": 0.0,
                "end": 10.0,
                "stats": {"rps": 75.0, "shed_ratio": 0.25},
            }
        ],
    }
    observe.add_step_figures(proxied, result, 2.0, cores=2.0, limit=None)
    figures = result["steps"][0]["resources"]
    # 0.1 cores over 75 admitted + 25 refused req/s: 1 ms a request.
    assert figures["proxy_cpu_cores"] == pytest.approx(0.1)
    assert figures["proxy_ms_per_request"] == pytest.approx(1.0)
    assert observe.summary(figures).endswith(
        "no metrics; proxy CPU 0.10 cores; saturated: nothing"
    )
    assert observe.offered_rps(None) == 0.0
    assert observe.offered_rps({"rps": 10.0, "shed_ratio": 1.0}) == 0.0
