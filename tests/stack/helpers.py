"""What the stack's tests share: the running stack's handle, clients that
load it steadily, and probes of its processes."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from deploy.stack import STATE_FILE


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

    def cached_item(self, item: int, base_url: str | None = None) -> dict[str, Any]:
        """The cached aggregation (deploy/aggregations.toml) of ``item``'s
        source, through nginx or ``base_url`` (an instance)."""
        response = requests.get(
            f"{base_url or self.url}/api/aggregate/cached/?id={item}",
            headers={"Authorization": f"Bearer {self.state['aggregation_token']}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["sources"]["item"]

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


class SteadyLoad:
    """Clients sending GETs through nginx back to back, each on one kept-alive
    connection, recording every request.

    Threads (greenlets: the tests run under gevent's patching), each with a
    plain ``http.client`` connection: it never retries anything. A request
    sent on a connection the server is closing fails here, as it would for
    any client that does not retry; only an answer that says
    ``Connection: close`` makes the next request open a new connection.
    Anything but a 200 is a failure: another status, a refused, reset or
    closed connection.
    """

    def __init__(
        self,
        url: str,
        clients: int = 4,
        pause: float = 0.01,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.clients = clients
        self.pause = pause
        self.headers = headers or {}
        # (started, ended, HTTP status or the exception's repr), monotonic time.
        self.results: list[tuple[float, float, int | str]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def requests(self) -> int:
        """How many requests were sent."""
        return len(self.results)

    @property
    def failures(self) -> list[str]:
        """Every request that did not answer 200, as status or error."""
        return [str(outcome) for _, _, outcome in self.results if outcome != 200]

    def _run(self) -> None:
        connection = http.client.HTTPConnection(*self.address, timeout=30)
        while not self._stop.is_set():
            started = time.monotonic()
            outcome: int | str
            try:
                connection.request("GET", self.target, headers=self.headers)
                response = connection.getresponse()
                response.read()
                outcome = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcome = repr(exc)
                connection.close()  # the next request opens a new one
            self.results.append((started, time.monotonic(), outcome))
            time.sleep(self.pause)
        connection.close()

    def __enter__(self) -> "SteadyLoad":
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as ``nobody``: the attacker, a local unprivileged user.

    The project's interpreter, so the attacker has the same client libraries
    (psycopg2, redis) at hand; from ``/``, with nothing of ours in the environment.
    """
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        + [sys.executable, "-c", code],
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
    )


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
