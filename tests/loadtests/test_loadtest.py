"""``make loadtest`` end to end: real stub, gunicorn, Locust and guards.

The command runs as its own process (importing locust would patch pytest's).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.loadtest import parse_args, scenario_specs
from tests.helpers import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)

GUARDS = """
[settings]
warmup_s = 1.0
abort_after_s = 1.0
abort_min_requests = 5

[scenarios.W1]
locustfile = "fanout_http.py,upstream_baseline.py"
users = 4
seconds = {seconds}

[scenarios.W1.endpoints."/demo/fan-out/ W1"]
p50_ms = {p50}
p99_ms = 5000
max_fail_ratio = 0.05
min_rps = 5

[[scenarios.W1.ratios]]
endpoint = "/demo/fan-out/ W1"
metric = "p50_ms"
baseline = "stub /delay baseline"
max = 20
"""


def loadtest(tmp_path: Path, database_url: str, *args: str, p50: float, seconds=5):
    """``python -m loadtests.loadtest`` on the test database: (exit code, output)."""
    guards = tmp_path / f"guards-{p50}.toml"
    guards.write_text(GUARDS.format(p50=p50, seconds=seconds))
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.loadtest",
            "--guards",
            str(guards),
            "--reports",
            str(tmp_path / "reports"),
            "--workers",
            "1",
            *args,
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def reports(tmp_path: Path, scenario: str = "W1") -> list[Path]:
    """The report directories of ``scenario``, oldest first."""
    return sorted((tmp_path / "reports").glob(f"*-{scenario}"))


def test_exit_code_flips_when_a_guard_is_impossible(tmp_path, test_database_url):
    """A 5-second W1 run passes (0); with p50 <= 1 ms it fails (3), aborted early.

    The passing run is open-model (40 req/s on a schedule), so it also checks the
    achieved rate against 97 % of the target and reports late starts.
    """
    code, output = loadtest(
        tmp_path, test_database_url, "--arrival-rate", "40", p50=2000
    )
    assert code == 0, output
    assert "loadtest: passed, 6 guards" in output
    assert "| pass | W1 | /demo/fan-out/ W1 | achieved / target rate |" in output
    assert "late starts" in output
    report = reports(tmp_path)[0]
    for name in ("report.html", "locust_stats.csv", "steady.json"):
        assert (report / name).exists(), name
    steady = json.loads((report / "steady.json").read_text())
    assert steady["scheduled"] >= 150
    window = steady["window"]
    assert window[0] >= 1.0 and window[1] - window[0] >= 2.0
    # Scraped during the run: the workers' CPU always, /metrics when it answers.
    resources = steady["resources"]
    assert resources["samples"] >= 2 and resources["cpu_util"] > 0
    assert "resources: workers at" in output
    if not resources["metrics"]:
        assert "no metrics" in output

    code, output = loadtest(tmp_path, test_database_url, p50=1, seconds=30)
    assert code == 3, output
    assert "| FAIL | W1 | /demo/fan-out/ W1 | p50_ms |" in output
    assert "aborted early" in output
    assert json.loads((reports(tmp_path)[-1] / "steady.json").read_text())["aborted"]


def test_master_and_two_workers(tmp_path, test_database_url):
    """With a master and 2 workers the run completes; guards run once, on the master."""
    code, output = loadtest(
        tmp_path, test_database_url, "--locust-workers", "2", p50=2000
    )
    assert code == 0, output
    report = reports(tmp_path)[0]
    steady = json.loads((report / "steady.json").read_text())
    assert steady["workers"] == 2
    admitted = steady["stats"]["/demo/fan-out/ W1"]["requests"]
    assert admitted > 0
    # Goodput is counted in the workers and summed on the master.
    good = steady["stats"]["/demo/fan-out/ W1 within SLO"]["requests"]
    assert admitted / 2 < good <= admitted
    log = (report / "locust.log").read_text()
    assert log.count("| result | scenario |") == 1
    assert log.count("guards evaluated on the master") == 1


OVERLOAD_GUARDS = """
[settings]
warmup_s = 1.0
abort_after_s = 100.0

[scenarios.W1]
locustfile = "fanout_http.py"
users = 2
seconds = 6

[scenarios.tiny]
on_demand = true
locustfile = "fanout_http.py"
server_env = { SHED_MAX_LIMIT = "2" }
workers = 1
users = 2
seconds = 6
arrival_rate = 100
slo_ms = 1000
request_timeout_ms = 2000

[scenarios.tiny.endpoints."/demo/fan-out/ W1"]
max_shed_ratio = 0.0
max_ms = 2000
"""


def test_refusals_are_reported_apart_and_guarded(tmp_path, test_database_url):
    """A server limited to 2 requests at once (the setting this test is about)
    under 100 req/s of W1: its 503 refusals land under NAME shed, not as
    failures; the arrival rate counts them; max_shed_ratio fails the run."""
    guards = tmp_path / "overload.toml"
    guards.write_text(OVERLOAD_GUARDS)
    env = {**os.environ, "DATABASE_URL": test_database_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.loadtest", "--guards", str(guards)]
        + ["--reports", str(tmp_path / "reports"), "--scenarios", "tiny"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    steady = json.loads((reports(tmp_path, "tiny")[0] / "steady.json").read_text())
    stats = steady["stats"]
    admitted, refused = stats["/demo/fan-out/ W1"], stats["/demo/fan-out/ W1 shed"]
    assert refused["requests"] > 0 and refused["fail_ratio"] == 0
    assert admitted["fail_ratio"] <= 0.05
    checks = {c["guard"]: c for c in steady["checks"]}
    assert not checks["max_shed_ratio"]["ok"] and checks["max_shed_ratio"]["value"] > 0
    assert checks["max_ms"]["ok"]
    assert checks["achieved / target rate"]["ok"], output
    assert "shed " in output and "goodput " in output


def test_on_demand_scenarios_run_only_when_named():
    """Without --scenarios the on-demand ones are left out; each keeps its
    own worker count unless --workers says otherwise."""
    config = {
        "scenarios": {
            "A": {"locustfile": "a.py"},
            "B": {"locustfile": "b.py", "on_demand": True, "workers": 1},
        }
    }
    assert list(scenario_specs(config, parse_args([]))) == ["A"]
    named = scenario_specs(config, parse_args(["--scenarios", "A,B"]))
    assert (named["A"]["workers"], named["B"]["workers"]) == (2, 1)
    forced = scenario_specs(config, parse_args(["--scenarios", "B", "--workers", "3"]))
    assert forced["B"]["workers"] == 3


def test_scenarios_against_a_target():
    """A target is one server: another worker model's scenario is left out unless
    named, and a same-run stub baseline without --upstream-url stops the command
    before any load."""
    config = {
        "scenarios": {
            "W1": {"locustfile": "fanout_http.py,upstream_baseline.py"},
            "W2": {"locustfile": "slow_sql.py"},
            "W2-gthread": {"locustfile": "slow_sql.py", "server": "gthread"},
        }
    }
    url = "http://127.0.0.1:8000"
    with pytest.raises(SystemExit, match="W1: with --target, --upstream-url"):
        scenario_specs(config, parse_args(["--target", url]))
    aimed = parse_args(["--target", url, "--upstream-url", "http://127.0.0.1:9"])
    assert list(scenario_specs(config, aimed)) == ["W1", "W2"]
    named = parse_args(["--target", url, "--scenarios", "W2,W2-gthread"])
    assert list(scenario_specs(config, named)) == ["W2", "W2-gthread"]
    with pytest.raises(SystemExit):
        parse_args(["--target", url, "--workers", "2"])
    with pytest.raises(SystemExit):
        parse_args(["--upstream-url", url])
