"""``make loadtest`` end to end: real stub, gunicorn, Locust and guards.

The command runs as its own process (importing locust would patch pytest's).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASE_DIR

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
    assert steady["stats"]["/demo/fan-out/ W1"]["requests"] > 0
    log = (report / "locust.log").read_text()
    assert log.count("| result | scenario |") == 1
    assert log.count("guards evaluated on the master") == 1
