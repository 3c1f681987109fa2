"""``--target``: the load commands aimed at servers they did not start.

A real gunicorn and stub upstream are started here, as a target's operator
would; the commands run as their own processes (importing locust would patch
pytest's) and must start no gunicorn, no stub and no database of their own.
Through nginx (when installed) the capacity report states the proxy's CPU per
request.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devtools.gunicorn import Server
from devtools.ports import free_port, wait_for_http
from devtools.processes import stop
from tests.helpers import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)

GUARDS = """
[settings]
warmup_s = 1.0
abort_after_s = 100.0

[scenarios.W1]
locustfile = "fanout_http.py,upstream_baseline.py"
users = 3
seconds = 5

[scenarios.W1.endpoints."/demo/fan-out/ W1"]
p99_ms = 5000
max_fail_ratio = 0.05

[[scenarios.W1.ratios]]
endpoint = "/demo/fan-out/ W1"
metric = "p50_ms"
baseline = "stub /delay baseline"
max = 20
"""

NGINX_CONF = """
worker_processes 1;
pid nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    upstream app {{ server {app}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Never buffer to disk: as root the workers run as nobody, who
            # cannot enter pytest's temporary directory.
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""

# A target needs no database: this one would fail anything that used it.
NO_DATABASE = "postgres://nobody@127.0.0.1:9/none"


@pytest.fixture(scope="module")
def target(start_gunicorn, test_database_url, upstream) -> Server:
    """One gevent worker with /metrics, fanning out to the stub upstream."""
    return start_gunicorn(
        test_database_url, workers=1, DEMO_UPSTREAM_URL=upstream, METRICS_ENABLED="true"
    )


@pytest.fixture
def nginx(tmp_path: Path, target: Server) -> Iterator[tuple[str, int]]:
    """nginx on a free loopback port proxying to ``target``: (URL, master pid)."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx): no live proxy")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(app=target.url.split("//")[1], port=port))
    log = (prefix / "nginx.log").open("w")
    process = subprocess.Popen(
        [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"]
        + ["-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/healthz", process, timeout=15)
        yield url, process.pid
    finally:
        stop(process)
        log.close()


def descendants(pid: int) -> set[str]:
    """The command lines of every process under ``pid`` now."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return set()
    lines = set()
    for child in children:
        try:
            lines.add(" ".join(child.cmdline()))
        except psutil.Error:
            continue  # gone since the listing
    return lines


def run(module: str, *args: str, timeout: float = 150) -> tuple[int, str, set[str]]:
    """``python -m module args``: exit code, output, and the command lines of
    every process it started, polled while it ran."""
    env = {**os.environ, "DATABASE_URL": NO_DATABASE}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        started |= descendants(process.pid)
        try:
            # A timed-out communicate keeps what it read for the next call.
            output, _ = process.communicate(timeout=0.2)
            return process.returncode, output, started
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                stop(process)
                raise


def assert_started_only_locust(started: set[str], reports: Path) -> None:
    """Locust ran; no gunicorn, stub upstream or server log of the command's own."""
    assert any("locust" in line for line in started), started
    assert not [line for line in started if "gunicorn" in line], started
    assert not [line for line in started if "devtools.upstream" in line], started
    assert not list(reports.glob("**/gunicorn*.log"))


def test_loadtest_against_a_running_server(tmp_path, target, upstream):
    """W1 against a gunicorn started here: passes, its stub timed directly, the
    workers' CPU sampled from the master pid given."""
    guards = tmp_path / "guards.toml"
    guards.write_text(GUARDS)
    reports = tmp_path / "reports"
    code, output, started = run(
        "loadtests.loadtest",
        *("--guards", str(guards), "--reports", str(reports)),
        *("--target", target.url, "--upstream-url", upstream),
        *("--server-pids", str(target.process.pid)),
    )
    assert code == 0, output
    assert f"loadtest: against {target.url} (started nothing; workers of" in output
    assert "| pass | W1 | /demo/fan-out/ W1 | p50_ms / stub /delay baseline |" in output
    assert "loadtest: passed, 3 guards" in output
    assert_started_only_locust(started, reports)
    steady = json.loads(next(reports.glob("*-W1/steady.json")).read_text())
    assert steady["stats"]["stub /delay baseline"]["requests"] > 0
    resources = steady["resources"]
    assert resources["samples"] >= 2 and resources["metrics"]
    # Only the given master's worker could have given a CPU figure.
    assert resources["cpu_util"] > 0, resources
    assert "resources: workers at" in output


def test_capacity_through_nginx(tmp_path, target, nginx):
    """A tiny step load through nginx: the report gives the per-instance req/s
    and the proxy's CPU ms per request, sampled from its master and worker."""
    url, proxy_pid = nginx
    reports = tmp_path / "reports"
    code, output, started = run(
        "loadtests.capacity",
        *("--reports", str(reports), "--workers", "1", "--slo-p95-ms", "5000"),
        *("--step-users", "2", "--step-seconds", "4", "--step-trim", "1"),
        *("--step-count", "2", "--confirm-seconds", "2", "--beyond", "0"),
        *("--target", url, "--instances", "1", "--proxy-pid", str(proxy_pid)),
        *("--server-pids", str(target.process.pid)),
    )
    assert code == 0, output
    assert_started_only_locust(started, reports)
    found = re.search(
        rf"Through {url}: ([\d,]+) req/s per instance at the knee \(\1 req/s / 1 "
        r"instance\(s\)\); the proxy used ([\d.]+) ms CPU per request",
        output,
    )
    assert found, output
    assert 0 < float(found.group(2)) < 50
    report = next(reports.glob("*-capacity-W1"))
    assert found.group(0) in (report / "capacity.md").read_text()
    rows = list(csv.DictReader((report / "capacity.csv").open()))
    # Every step was sampled; CPU times tick in 10 ms, so a short quiet step
    # may show none.
    costs = [float(row["proxy_ms_per_request"]) for row in rows]
    assert len(costs) == 2 and max(costs) > 0
    assert all(float(row["cpu_util"]) > 0 for row in rows)
