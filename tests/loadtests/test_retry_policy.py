"""The harness user's retry policy against a real server that refuses everything.

Locust runs as its own process (importing locust would patch pytest's); the
server is a small threaded HTTP/1.1 server in this process that answers every
request as admission control does when full: 503, ``X-Shed-Reason`` and
``Retry-After: 1``.
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtests.harness.locust_run import run_locust
from loadtests.harness.processes import Processes

SECONDS = 3


class Refusing(BaseHTTPRequestHandler):
    """Refuses every GET like a full server, keeping the connection open."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle, each answer would
    # wait for the client's delayed ACK (40 ms) and cap the retry rate.
    disable_nagle_algorithm = True
    count = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """503 with the shed headers; counts the request."""
        with Refusing.lock:
            Refusing.count += 1
        body = b'{"detail": "overloaded"}'
        self.send_response(503)
        self.send_header("X-Shed-Reason", "concurrency")
        self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet: thousands of refusals would flood the test output."""


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """Base URL of a server that refuses every request; its count starts at 0."""
    Refusing.count = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def refused_requests(host: str, tmp_path, policy: str) -> tuple[int, dict]:
    """Requests the server saw from one closed-model W2 user in SECONDS under
    ``policy``, and the run's steady-state stats."""
    Refusing.count = 0
    report = tmp_path / policy
    with Processes() as processes:
        run = run_locust(
            processes,
            ["slow_sql.py"],
            host=host,
            users=1,
            seconds=SECONDS,
            report_dir=report,
            options=["--retry-policy", policy, "--warmup", "0"],
        )
    assert run.returncode == 0, (report / "locust.log").read_text()
    return Refusing.count, json.loads((report / "steady.json").read_text())


def test_at_once_retries_without_waiting_and_retry_after_backs_off(
    refusing_server, tmp_path
):
    """One user refused for SECONDS: the polite one (the default) sends about one
    request per Retry-After second; the impolite one sends the next request as
    soon as the refusal arrives, hundreds of them. Both report them as NAME shed,
    not as failures."""
    polite, polite_run = refused_requests(refusing_server, tmp_path, "retry-after")
    impolite, impolite_run = refused_requests(refusing_server, tmp_path, "at-once")
    assert 1 <= polite <= SECONDS + 2
    assert impolite >= 100 * SECONDS
    for run in (polite_run, impolite_run):
        assert run["stats"]["/demo/slow-sql/ shed"]["fail_ratio"] == 0
        assert "/demo/slow-sql/" not in run["stats"]
    assert (polite_run["retry_policy"], impolite_run["retry_policy"]) == (
        "retry-after",
        "at-once",
    )
