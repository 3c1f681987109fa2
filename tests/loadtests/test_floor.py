"""The floor of ``make bench-fanout``: gunicorn's stock gevent worker, real stub."""

import time

import pytest
import requests

from devtools.processes import Processes
from loadtests.harness.servers import start_floor
from loadtests.harness.workloads.fanout import workers_cpu_seconds


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    """The stub upstream and the floor (2 gunicorn gevent workers): its base URL,
    its master process and its log."""
    logs = tmp_path_factory.mktemp("floor-logs")
    with Processes(log_dir=logs) as processes:
        upstream = processes.start_upstream()
        base = start_floor(processes, upstream=upstream, workers=2)
        yield base, processes.servers[base], processes.log_path("gunicorn-floor")


def test_the_floor_runs_without_the_services_gunicorn_conf(floor):
    """gunicorn would load gunicorn.conf.py from the working directory: the floor
    must not get the service's hooks (whose post_fork logs each worker ready)."""
    base, _, log = floor
    requests.get(f"{base}/demo/fan-out/?http=1&ms=0", timeout=10)
    text = log.read_text()
    assert "Booting worker" in text
    assert "ready (worker_connections=" not in text


def test_legs_run_concurrently_and_answer_like_the_project(floor):
    """Ten 500 ms legs take well under the 5 s they would take one after another,
    in the project's JSON shape."""
    base, _, _ = floor
    started = time.monotonic()
    response = requests.get(f"{base}/demo/fan-out/?http=10&ms=500", timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] == 10 and len(body["legs"]) == 10
    assert all(leg["value"] == {"http_status": 200} for leg in body["legs"])
    assert elapsed < 2.0


def test_workers_cpu_is_visible_to_the_bench(floor):
    """The master's children are the workers: serving requests adds to their CPU
    time (counted in clock ticks, so enough requests to cover several)."""
    base, master, _ = floor
    cpu_before = workers_cpu_seconds(master.pid)
    with requests.Session() as session:
        for _ in range(50):
            session.get(f"{base}/demo/fan-out/?http=10&ms=0", timeout=10)
    assert workers_cpu_seconds(master.pid) > cpu_before + 0.02
