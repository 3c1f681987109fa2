"""The gunicorn starter: its DATABASE_URL options, and when it hands a server over."""

import re
import subprocess
import sys
import threading
import time

import pytest

from devtools.gunicorn import wait_for_workers, with_query
from devtools.processes import stop as stop_process


def test_with_query_adds_options_to_a_database_url():
    """Options go after ``?`` or ``&``, encoded; none leaves the URL alone."""
    url = "postgres://u@127.0.0.1:5432/db"
    assert with_query(url, {}) == url
    assert with_query(url, {"application_name": "a b"}) == url + "?application_name=a+b"
    assert (
        with_query(url + "?sslmode=disable", {"conn_max_age": "60"})
        == url + "?sslmode=disable&conn_max_age=60"
    )


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_the_start_waits_for_every_worker(tmp_path):
    """A server is handed over once all its workers logged that they serve,
    counted from where this start's output begins: a previous run's lines in
    the same log do not count."""
    log = tmp_path / "gunicorn.log"
    log.write_text("[1] gevent worker 11 ready (old run)\n")
    start = log.stat().st_size
    with log.open("a") as output:
        output.write("[2] gevent worker 21 ready (worker_connections=1000)\n")
    process = _sleeper()
    try:

        def second_worker() -> None:
            time.sleep(0.5)
            with log.open("a") as output:
                output.write("[2] gevent worker 22 ready (worker_connections=1000)\n")

        writer = threading.Thread(target=second_worker)
        started = time.monotonic()
        writer.start()
        wait_for_workers(log, start, 2, process)
        assert time.monotonic() - started >= 0.45
        writer.join()
        with pytest.raises(TimeoutError):
            wait_for_workers(log, start, 3, process, timeout=0.3)
    finally:
        process.kill()
        process.wait()


def test_the_wait_for_workers_ends_when_gunicorn_exits(tmp_path):
    """A server that exits while starting is reported at once, not after the
    timeout."""
    log = tmp_path / "gunicorn.log"
    log.write_text("")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_for_workers(log, 0, 2, process, timeout=10)
    assert time.monotonic() - started < 2


@pytest.mark.django_db(transaction=True)
def test_a_started_server_has_all_its_workers_serving(
    start_gunicorn, test_database_url
):
    """start_gunicorn returns once all three workers serve (the first one
    answered while the others were loading in 3 of 6 starts before)."""
    server = start_gunicorn(test_database_url, workers=3)
    ready = set(re.findall(r"gevent worker (\d+) ready", server.log.read_text()))
    assert len(ready) == 3
    stop_process(server.process)
