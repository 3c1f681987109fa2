"""A whole stack (``python -m deploy.stack``) for the tests of this directory.

The stack runs as a subprocess, exactly as ``make stack`` runs it, against a
database of its own (``stack``) in the tests' throwaway cluster
(``.data/postgres-test``), never the development data.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.stack import STATE_FILE, find_binary
from loadtests.harness.processes import stop

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class RunningStack:
    """The stack subprocess, its run dir and its state file."""

    def __init__(self, process: subprocess.Popen, run_dir: Path, output: Path) -> None:
        self.process = process
        self.run_dir = run_dir
        self.output = output

    @property
    def state(self) -> dict[str, Any]:
        """The state file as it is now."""
        return json.loads((self.run_dir / STATE_FILE).read_text())

    @property
    def url(self) -> str:
        """nginx's base URL."""
        return self.state["url"]

    def instance_ports(self) -> set[str]:
        """The instances' loopback addresses as nginx logs them (host:port)."""
        return {f"127.0.0.1:{i['port']}" for i in self.state["instances"]}

    def nginx_log_size(self) -> int:
        """The access log's size now: read the lines after it with ``nginx_lines``."""
        return Path(self.state["nginx"]["access_log"]).stat().st_size

    def nginx_lines(self, since: int = 0) -> list[str]:
        """nginx's access log lines written after offset ``since``."""
        with open(self.state["nginx"]["access_log"], "rb") as log:
            log.seek(since)
            return log.read().decode().splitlines()


def eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """``check()`` once it is truthy (log lines are written just after the
    answer is sent, so a client can be faster than the log); its last value."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def wait_for_state(stack: RunningStack, timeout: float = 120.0) -> None:
    """Wait until the stack reports itself running; fail with its output if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            pytest.fail(f"the stack exited:\n{stack.output.read_text()}")
        try:
            if stack.state["status"] == "running":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    pytest.fail(f"the stack did not start in {timeout} s:\n{stack.output.read_text()}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[RunningStack]:
    """A running stack (nginx, two gunicorns, PgBouncer, PostgreSQL, stub upstream)."""
    for name in ("nginx", "pgbouncer", "redis-server"):
        if find_binary(name) is None:
            pytest.skip(f"{name} is not installed (apt-get install {name})")
    from project import embedded_pg

    run_dir = tmp_path_factory.mktemp("stack")
    output = run_dir / "stack.out"
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.stack", "--run-dir", str(run_dir)]
            + ["--pg-data", str(embedded_pg.TEST_DATA_DIR), "--database", "stack"],
            cwd=BASE_DIR,
            env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningStack(process, run_dir, output)
    try:
        wait_for_state(running)
        yield running
    finally:
        stop(process, timeout=60)


class SteadyLoad:
    """A few clients sending GETs through nginx back to back, counting failures.

    Threads (greenlets: the tests run under gevent's patching), each with a
    keep-alive session, as a browser or service client would. Like those
    clients (RFC 9112, 9.3.1: Go's net/http, browsers), a GET whose kept-alive
    connection was closed before any byte of an answer arrived is sent once
    more on a new connection, and counted in ``retried``: a reloading nginx
    closes its old workers' idle client connections, and one may close just as
    a request is sent on it. Anything else is a failure: any status but 200,
    a refused or reset connection, an abort on the retry.
    """

    def __init__(self, url: str, clients: int = 4, pause: float = 0.01) -> None:
        self.url = url
        self.clients = clients
        self.pause = pause
        self.requests = 0
        self.retried: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _get(self, session: requests.Session) -> None:
        try:
            response = session.get(self.url, timeout=10)
        except requests.ConnectionError as exc:
            # urllib3's "Connection aborted.": closed (or reset) before an answer.
            if "Connection aborted" not in str(exc):
                raise
            self.retried.append(repr(exc))
            session.close()  # the retry opens a new connection
            response = session.get(self.url, timeout=10)
        if response.status_code != 200:
            self.failures.append(f"{response.status_code} {response.text[:200]}")

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                self._get(session)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.requests += 1
            time.sleep(self.pause)

    def __enter__(self) -> "SteadyLoad":
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and its children (a gunicorn master and its workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    killed = []
    for target in [pid, *map(int, children)]:
        try:
            os.kill(target, signal.SIGKILL)
            killed.append(target)
        except ProcessLookupError:
            pass
    return killed


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its parent counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
