"""A real gunicorn whose 2 workers recycle under traffic: nothing counted twice,
nothing lost, no live gauge left behind by a dead worker."""

import re
import time
from pathlib import Path

import pytest
import requests

from project.observability import loop

from .live import samples, total

REQUESTS = 150
MAX_REQUESTS = 25
# How often a worker writes its batched samples.
BATCH_WRITE_S = loop.PERIOD_S * loop.GREENLETS_EVERY


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


def settled(url: str, labels: dict[str, str]) -> dict:
    """The samples once the start-up probes are all written: a worker writes
    what it counted once a second (loop.py), and the one not serving /metrics
    may not have yet (then its probe was counted among the test's requests:
    151 of 150), nor a probe still being answered."""
    found = samples(url)
    for _ in range(10):
        time.sleep(BATCH_WRITE_S + 0.2)
        again = samples(url)
        if total(again, "gd_http_requests_total", **labels) == total(
            found, "gd_http_requests_total", **labels
        ):
            return again
        found = again
    return found


def test_counters_survive_recycles_exactly(recycling_server):
    server, directory = recycling_server
    labels = {"route": "healthz", "method": "GET", "status": "2xx"}
    before = settled(server.url, labels)
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
