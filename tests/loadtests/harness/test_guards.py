"""Guard evaluation on synthetic steady-state stats (loadtests.guards)."""

import pytest

from loadtests.harness import guards
from loadtests.harness.paths import LOCUSTFILES
from loadtests.harness.window import EndpointStats


def stats(
    requests=1000,
    failures=0,
    seconds=10.0,
    p50=50.0,
    p95=80.0,
    p99=100.0,
    top=150.0,
):
    """EndpointStats with failing defaults."""
    return EndpointStats(requests, failures, seconds, p50, p95, p99, top)


SPEC = {
    "endpoints": {
        "/x": {
            "p50_ms": 60,
            "p95_ms": 90,
            "p99_ms": 120,
            "max_fail_ratio": 0.01,
            "min_rps": 50,
        }
    }
}


def failed(checks: list[guards.Check]) -> list[str]:
    """The guard names that failed."""
    return [c.guard for c in checks if not c.ok]


def test_all_guards_pass():
    """Figures within every limit pass, exit code 0."""
    checks = guards.evaluate("S", SPEC, {"/x": stats()})
    assert len(checks) == 5 and failed(checks) == []
    assert guards.exit_code(checks) == 0


@pytest.mark.parametrize(
    ("figures", "guard"),
    [
        ({"p50": 61}, "p50_ms"),
        ({"p95": 91}, "p95_ms"),
        ({"p99": 121}, "p99_ms"),
        ({"failures": 11}, "max_fail_ratio"),
        ({"requests": 499, "seconds": 10.0}, "min_rps"),
    ],
)
def test_each_kind_fails_alone(figures, guard):
    """Breaking one limit fails exactly that guard, with the distinct exit code."""
    checks = guards.evaluate("S", SPEC, {"/x": stats(**figures)})
    assert failed(checks) == [guard]
    assert guards.exit_code(checks) == guards.GUARD_FAILED == 3


def test_limits_are_inclusive():
    """A figure exactly at its limit passes."""
    checks = guards.evaluate(
        "S", SPEC, {"/x": stats(p50=60, failures=10, requests=1000)}
    )
    assert failed(checks) == []


def test_endpoint_without_requests_fails():
    """A guarded endpoint that saw no requests fails every guard, 'no requests'."""
    checks = guards.evaluate("S", SPEC, {})
    assert len(failed(checks)) == 5
    assert {c.detail for c in checks} == {"no requests"}


def test_same_run_ratio_guard():
    """Fan-out p50 over the baseline's p50 is checked against max."""
    spec = {
        "ratios": [{"endpoint": "/x", "metric": "p50_ms", "baseline": "/b", "max": 1.3}]
    }
    ok = guards.evaluate("S", spec, {"/x": stats(p50=64), "/b": stats(p50=50)})
    bad = guards.evaluate("S", spec, {"/x": stats(p50=66), "/b": stats(p50=50)})
    missing = guards.evaluate("S", spec, {"/x": stats(p50=64)})
    assert ok[0].ok and ok[0].value == pytest.approx(1.28)
    assert not bad[0].ok
    assert not missing[0].ok and missing[0].detail == "no baseline figure"


def test_cross_scenario_ratio_guard():
    """gevent req/s over gthread req/s is checked against min; absent runs skip it."""
    ratio = {
        "scenario": "A",
        "baseline_scenario": "B",
        "endpoint": "/x",
        "metric": "rps",
        "min": 1.0,
    }
    fast = {"A": {"/x": stats(requests=1100)}, "B": {"/x": stats(requests=1000)}}
    slow = {"A": {"/x": stats(requests=900)}, "B": {"/x": stats(requests=1000)}}
    assert guards.evaluate_cross([ratio], fast)[0].ok
    assert not guards.evaluate_cross([ratio], slow)[0].ok
    assert guards.evaluate_cross([ratio], {"A": fast["A"]}) == []


def test_open_model_needs_97_percent_of_target():
    """An arrival-rate run fails below 97 % of its target rate."""
    spec = {"arrival_rate": 100}
    assert guards.evaluate("S", spec, {"Aggregated": stats(requests=970)})[0].ok
    assert not guards.evaluate("S", spec, {"Aggregated": stats(requests=960)})[0].ok


def test_open_model_rate_is_measured_on_the_main_endpoint():
    """The rate is the first guarded endpoint's: baseline requests do not count."""
    spec = {"arrival_rate": 100, "endpoints": {"/x": {"max_fail_ratio": 0.01}}}
    figures = {"/x": stats(requests=900), "Aggregated": stats(requests=1000)}
    check = guards.evaluate("S", spec, figures)[-1]
    assert (check.endpoint, check.ok) == ("/x", False)


def test_open_model_counts_refused_requests_as_arrived():
    """Refusals (NAME shed) were sent too: the target rate counts them."""
    spec = {"arrival_rate": 100, "endpoints": {"/x": {"max_fail_ratio": 0.01}}}
    check = guards.evaluate(
        "S", spec, {"/x": stats(requests=400), "/x shed": stats(requests=590)}
    )[-1]
    assert check.ok and check.value == pytest.approx(0.99)
    only_refused = guards.evaluate("S", spec, {"/x shed": stats(requests=990)})[-1]
    assert only_refused.ok


def test_shed_ratio_guard():
    """max_shed_ratio: refused / (admitted + refused), none refused is 0."""
    spec = {"endpoints": {"/x": {"max_shed_ratio": 0.001}}}
    none = guards.evaluate("S", spec, {"/x": stats(requests=1000)})[0]
    one = guards.evaluate(
        "S", spec, {"/x": stats(requests=999), "/x shed": stats(requests=1)}
    )[0]
    two = guards.evaluate(
        "S", spec, {"/x": stats(requests=998), "/x shed": stats(requests=2)}
    )[0]
    assert (none.ok, none.value) == (True, 0.0)
    assert (one.ok, one.value) == (True, 0.001)
    assert (two.ok, two.value) == (False, 0.002)
    assert guards.evaluate("S", spec, {})[0].value is None


def test_slowest_answer_guard():
    """max_ms bounds the slowest answer of the window (no request past a deadline)."""
    spec = {"endpoints": {"/x": {"max_ms": 1000}}}
    assert guards.evaluate("S", spec, {"/x": stats(top=1000)})[0].ok
    assert not guards.evaluate("S", spec, {"/x": stats(top=1100)})[0].ok


def test_hopeless_only_far_beyond_the_limit():
    """Early abort takes failed guards past factor x limit (max) or limit / factor."""
    checks = guards.evaluate("S", SPEC, {"/x": stats(p50=170, p95=200, requests=200)})
    assert sorted(failed(checks)) == ["min_rps", "p50_ms", "p95_ms"]
    lost = {c.guard for c in guards.hopeless(checks, 2.0)}
    assert lost == {"p50_ms", "p95_ms", "min_rps"}
    assert {c.guard for c in guards.hopeless(checks, 3.0)} == set()


def test_unknown_guard_is_an_error():
    """A typo in guards.toml is reported, not ignored."""
    with pytest.raises(ValueError, match="p59_ms"):
        guards.evaluate("S", {"endpoints": {"/x": {"p59_ms": 1}}}, {"/x": stats()})


def test_table_marks_failures():
    """The table has one row per check, failures in capitals."""
    table = guards.format_table(guards.evaluate("S", SPEC, {"/x": stats(p50=61)}))
    assert table.count("| FAIL |") == 1 and table.count("| pass |") == 4


def test_project_guards_file_loads():
    """guards.toml parses, names known guards, and gets default settings."""
    config = guards.load()
    assert config["settings"]["min_arrival_ratio"] == 0.97
    for name, spec in config["scenarios"].items():
        for locustfile in spec["locustfile"].split(","):
            assert (LOCUSTFILES / locustfile).exists(), name
        for limits in spec.get("endpoints", {}).values():
            assert set(limits) <= guards.GUARDS, name


def test_same_round_ratio_compares_successful_answers_only():
    """ok_rps counts an endpoint's successful answers: refusals (NAME shed) and
    failures are not throughput, so a server that admits fewer requests and
    refuses the rest in a millisecond fails the 0.9 guard however many it
    refused."""
    ratio = {
        "scenario": "on",
        "baseline_scenario": "off",
        "endpoint": "/x",
        "metric": "ok_rps",
        "min": 0.9,
    }
    off = {"/x": stats(requests=4000, seconds=10.0)}
    storm = {
        "/x": stats(requests=600, failures=20, seconds=10.0),
        "/x shed": stats(requests=90000, seconds=10.0, p50=1, p95=1, p99=2),
    }
    check = guards.evaluate_cross([ratio], {"on": storm, "off": off})[0]
    assert not check.ok and check.value == pytest.approx(58 / 400)
    assert check.guard == "ok_rps / off" and check.detail == "58 / 400"
    # 0.91 x the requests, but failures take the answers under 0.9 x.
    failing = {"/x": stats(requests=3640, failures=50, seconds=10.0)}
    assert not guards.evaluate_cross([ratio], {"on": failing, "off": off})[0].ok
    fine = {"/x": stats(requests=3700, seconds=10.0), "/x shed": stats(requests=9)}
    assert guards.evaluate_cross([ratio], {"on": fine, "off": off})[0].ok


def test_goodput_against_measured_capacity():
    """min_capacity_ratio: the endpoint's successful answers a second over the
    spec's capacity_rps (measured before the run); without one it fails and
    says so rather than passing."""
    spec = {"endpoints": {"/x within SLO": {"min_capacity_ratio": 0.85}}}
    good = {"/x within SLO": stats(requests=2000, seconds=10.0)}
    measured = {**spec, "capacity_rps": 230.0}
    check = guards.evaluate("S", measured, good)[0]
    assert check.ok and check.value == pytest.approx(200 / 230)
    assert not guards.evaluate("S", {**spec, "capacity_rps": 240.0}, good)[0].ok
    unmeasured = guards.evaluate("S", spec, good)[0]
    assert not unmeasured.ok and unmeasured.detail == "no capacity measured"
    silent = guards.evaluate("S", measured, {})[0]
    assert not silent.ok and silent.detail.startswith("no requests")


def test_project_storm_pairs_compare_with_admission_off():
    """Every at-once scenario that make loadtest runs has its SHED_ENABLED=false
    twin with the same load, and a 0.9 ok_rps ratio between them."""
    config = guards.load()
    scenarios = config["scenarios"]
    storms = [
        name
        for name, spec in scenarios.items()
        if spec.get("retry_policy") == "at-once"
        and spec.get("server_env", {}).get("SHED_ENABLED") != "false"
    ]
    assert {"W1-storm", "W2-storm", "AGG-storm"} <= set(storms)
    for name in storms:
        ratio = next(r for r in config["ratios"] if r["scenario"] == name)
        off = scenarios[ratio["baseline_scenario"]]
        assert off["server_env"] == {
            **scenarios[name].get("server_env", {}),
            "SHED_ENABLED": "false",
        }
        for key in ("locustfile", "users", "seconds", "retry_policy"):
            assert off[key] == scenarios[name][key], (name, key)
        assert (ratio["metric"], ratio["min"]) == ("ok_rps", 0.9)
        assert not scenarios[name].get("on_demand")
