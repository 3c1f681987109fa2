"""A real gunicorn whose 2 workers recycle under traffic: nothing counted twice,
nothing lost, no live gauge left behind by a dead worker."""

import re
import time
from pathlib import Path

import pytest
import requests

from .live import samples, total

REQUESTS = 150
MAX_REQUESTS = 25


def live_gauge_pids(directory: Path) -> set[int]:
    """Pids with a ``livesum`` gauge file in the multiprocess directory."""
    return {
        int(match.group(1))
        for path in directory.glob("gauge_live*.db")
        if (match := re.search(r"_(\d+)\.db$", path.name))
    }


def worker_pids(master: int) -> set[int]:
    return {
        int(pid)
        for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()
    }


@pytest.fixture(scope="module")
def recycling_server(start_gunicorn, test_database_url, tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics")
    server = start_gunicorn(
        test_database_url,
        workers=2,
        GUNICORN_CMD_ARGS=f"--max-requests {MAX_REQUESTS} --max-requests-jitter 0",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
    )
    return server, directory


def recycles_logged(server) -> int:
    return server.log.read_text().count("Autorestarting worker")


def test_counters_survive_recycles_exactly(recycling_server):
    server, directory = recycling_server
    labels = {"route": "healthz", "method": "GET", "status": "2xx"}
    before = samples(server.url)  # the start-up probes answered already
    answered = 0
    for _ in range(REQUESTS):
        # A fresh connection each: a recycling worker finishes its request and
        # the next connection goes to whichever worker accepts it.
        if requests.get(server.url + "/healthz", timeout=10).status_code == 200:
            answered += 1
    assert answered == REQUESTS
    names = ("gd_http_requests_total", "gd_http_request_duration_seconds_count")

    def counted(found: dict) -> tuple[float, ...]:
        return tuple(
            total(found, name, **labels) - total(before, name, **labels)
            for name in names
        )

    # A worker past max_requests serves on until its loop notices (up to 1 s),
    # then exits; a live worker writes its requests once a second: wait until
    # every recycle logged and every request is counted.
    limit = time.monotonic() + 15
    while True:
        found = samples(server.url)
        recycles = total(found, "gd_worker_recycles_total")
        done = recycles == recycles_logged(server) and counted(found) == (
            REQUESTS,
            REQUESTS,
        )
        if done or time.monotonic() > limit:
            break
        time.sleep(0.5)
    assert recycles == recycles_logged(server) >= 2
    assert counted(found) == (REQUESTS, REQUESTS)  # no request lost or doubled
    assert total(found, "gd_http_requests_in_flight") == 0
    # Only live workers keep live gauges: the dead ones' files are gone.
    live = live_gauge_pids(directory)
    assert live and live <= worker_pids(server.process.pid)
