"""The asyncio baseline of ``make bench-fanout``: real uvicorn workers, real stub."""

import time

import pytest
import requests

from devtools.processes import Processes
from loadtests.harness.servers import start_asyncio_baseline
from loadtests.harness.workloads.fanout import workers_cpu_seconds


@pytest.fixture(scope="module")
def baseline():
    """The stub upstream and the asyncio baseline (2 uvicorn workers): its base URL
    and its supervisor process."""
    with Processes() as processes:
        upstream = processes.start_upstream()
        base = start_asyncio_baseline(processes, upstream=upstream, workers=2)
        yield base, processes.servers[base]


def test_legs_run_concurrently_and_answer_like_the_project(baseline):
    """Ten 500 ms legs take well under the 5 s they would take one after another,
    in the project's JSON shape."""
    base, _ = baseline
    started = time.monotonic()
    response = requests.get(f"{base}/demo/fan-out/?http=10&ms=500", timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] == 10 and len(body["legs"]) == 10
    assert all(leg["value"] == {"http_status": 200} for leg in body["legs"])
    assert elapsed < 2.0


def test_workers_cpu_is_visible_to_the_bench(baseline):
    """The supervisor's children are the workers: serving requests adds to their
    CPU time (counted in clock ticks, so enough requests to cover several)."""
    base, supervisor = baseline
    cpu_before = workers_cpu_seconds(supervisor.pid)
    with requests.Session() as session:
        for _ in range(50):
            session.get(f"{base}/demo/fan-out/?http=10&ms=0", timeout=10)
    assert workers_cpu_seconds(supervisor.pid) > cpu_before + 0.02


@pytest.mark.parametrize(
    ("query", "param"),
    [("http=abc&ms=1", "http"), ("http=0&ms=1", "http"), ("http=1&ms=-1", "ms")],
)
def test_bad_parameters_are_a_400_naming_them(baseline, query, param):
    """Bad input is a JSON 400 naming the parameter, as in the project."""
    base, _ = baseline
    response = requests.get(f"{base}/demo/fan-out/?{query}", timeout=10)
    assert response.status_code == 400
    assert response.json()["param"] == param
