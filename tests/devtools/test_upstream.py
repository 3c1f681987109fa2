"""Tests for the stub upstream, run as a real subprocess the way load tests use it."""

import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10  # seconds, on every HTTP call: a hung server must fail, not stall, the run
LISTENING = re.compile(r"^upstream listening on (http://127\.0\.0\.1:(\d+))$")


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    # --port 0 lets the kernel pick the port, so there is no free-port race;
    # the server prints the port it got.
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.upstream", "--port", "0", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=TIMEOUT)
    line = proc.stdout.readline().strip() if ready else ""
    match = LISTENING.match(line)
    if match is None:
        _stop(proc)
        pytest.fail(f"stub upstream did not start: {line!r}")
    return proc, match.group(1)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """Base URL of a stub upstream subprocess shared by this module."""
    proc, url = _start()
    yield url
    _stop(proc)


def test_delay_waits_and_returns_100_byte_json(upstream: str) -> None:
    """Answers /delay?ms=200 after at least 200 ms with a ~100-byte JSON body."""
    start = time.monotonic()
    resp = requests.get(f"{upstream}/delay", params={"ms": 200}, timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.2
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert 90 <= len(resp.content) <= 110
    assert resp.json()["slept_ms"] == 200


def test_delay_serves_requests_concurrently(upstream: str) -> None:
    """Serves 20 concurrent /delay?ms=300 calls in under 1.5 s (serially: 6 s)."""

    def call(_: int) -> int:
        url = f"{upstream}/delay?ms=300"
        return requests.get(url, timeout=TIMEOUT).status_code

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(call, range(20)))
    elapsed = time.monotonic() - start
    assert statuses == [200] * 20
    assert elapsed < 1.5


def test_reused_connection_answers_without_nagle_delay(upstream: str) -> None:
    """A keep-alive request is not held ~40 ms by Nagle and a delayed ACK."""
    with requests.Session() as session:
        session.get(f"{upstream}/delay?ms=0", timeout=TIMEOUT)
        times = []
        for _ in range(5):
            started = time.monotonic()
            session.get(f"{upstream}/delay?ms=0", timeout=TIMEOUT)
            times.append(time.monotonic() - started)
    assert sorted(times)[2] < 0.02


@pytest.mark.parametrize("ms", ["-1", "abc", "999999", "", "1.5"])
def test_delay_rejects_bad_ms(upstream: str, ms: str) -> None:
    """Returns 400 JSON naming ms when ms is negative, not an integer or above 60000."""
    resp = requests.get(f"{upstream}/delay", params={"ms": ms}, timeout=TIMEOUT)
    assert resp.status_code == 400
    body = resp.json()
    assert body["param"] == "ms"
    assert body["error"]


def test_status_returns_requested_code(upstream: str) -> None:
    """Returns the status given by code, with a JSON body echoing it."""
    resp = requests.get(f"{upstream}/status?code=503&ms=10", timeout=TIMEOUT)
    assert resp.status_code == 503
    assert resp.json() == {"status": 503}


@pytest.mark.parametrize("code", ["99", "600", "x"])
def test_status_rejects_bad_code(upstream: str, code: str) -> None:
    """Returns 400 JSON naming code when code is outside 100..599 or not an integer."""
    resp = requests.get(f"{upstream}/status", params={"code": code}, timeout=TIMEOUT)
    assert resp.status_code == 400
    assert resp.json()["param"] == "code"


def test_reset_breaks_the_connection(upstream: str) -> None:
    """Drops the connection without a response, so requests raises ConnectionError."""
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{upstream}/reset?ms=50", timeout=TIMEOUT)


def test_reset_sends_tcp_rst(upstream: str) -> None:
    """Resets the connection (ECONNRESET), rather than closing it cleanly."""
    host, port = upstream.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /reset HTTP/1.1\r\nHost: stub\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


def test_trickle_sends_slow_body(upstream: str) -> None:
    """Sends /trickle?chunks=5&interval_ms=100 as 50 bytes over at least 0.4 s."""
    start = time.monotonic()
    resp = requests.get(f"{upstream}/trickle?chunks=5&interval_ms=100", timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert resp.status_code == 200
    assert resp.content == b"x" * 50
    assert elapsed >= 0.4


@pytest.mark.parametrize(("chunked", "length"), [("0", "30"), ("1", None)])
def test_trickle_declares_its_length_unless_chunked(
    upstream: str, chunked: str, length: str | None
) -> None:
    """/trickle sends Content-Length, or with chunked=1 chunked transfer encoding."""
    resp = requests.get(
        f"{upstream}/trickle?chunks=3&chunked={chunked}", timeout=TIMEOUT
    )
    assert resp.content == b"x" * 30
    assert resp.headers.get("Content-Length") == length
    assert ("chunked" in resp.headers.get("Transfer-Encoding", "")) == (length is None)


def test_trickle_rejects_too_many_chunks(upstream: str) -> None:
    """Returns 400 JSON naming chunks when chunks is above 10000."""
    resp = requests.get(f"{upstream}/trickle?chunks=10001", timeout=TIMEOUT)
    assert resp.status_code == 400
    assert resp.json()["param"] == "chunks"


def test_stats_counts_requests_per_path(upstream: str) -> None:
    """Counts requests per path since the last /stats/reset, except /stats itself."""
    reset = requests.post(f"{upstream}/stats/reset", timeout=TIMEOUT)
    assert reset.status_code == 200
    for _ in range(3):
        requests.get(f"{upstream}/delay?ms=0", timeout=TIMEOUT)
    requests.get(f"{upstream}/status?code=500", timeout=TIMEOUT)
    requests.get(f"{upstream}/stats", timeout=TIMEOUT)
    resp = requests.get(f"{upstream}/stats", timeout=TIMEOUT)
    assert resp.json() == {"requests": {"/delay": 3, "/status": 1}, "connections": 4}

    requests.get(f"{upstream}/stats/reset", timeout=TIMEOUT)
    resp = requests.get(f"{upstream}/stats", timeout=TIMEOUT)
    assert resp.json() == {"requests": {}, "connections": 0}


def test_stats_counts_connections_not_requests(upstream: str) -> None:
    """Three requests on one keep-alive connection count as one connection."""
    requests.post(f"{upstream}/stats/reset", timeout=TIMEOUT)
    with requests.Session() as session:
        for _ in range(3):
            session.get(f"{upstream}/delay?ms=0", timeout=TIMEOUT)
    stats = requests.get(f"{upstream}/stats", timeout=TIMEOUT).json()
    assert stats["connections"] == 1


def test_unknown_path_returns_404_json(upstream: str) -> None:
    """Returns 404 JSON for a path it does not serve."""
    resp = requests.get(f"{upstream}/no-such-thing", timeout=TIMEOUT)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json()["error"] == "not found"


def test_sigterm_stops_cleanly_with_request_in_flight() -> None:
    """Exits 0 within 5 s of SIGTERM, even with a long /delay in flight."""
    proc, url = _start()
    try:
        in_flight = threading.Thread(
            target=_swallow_get, args=(f"{url}/delay?ms=30000",)
        )
        in_flight.start()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        in_flight.join(timeout=TIMEOUT)
    finally:
        _stop(proc)


def _swallow_get(url: str) -> None:
    try:
        requests.get(url, timeout=TIMEOUT)
    except requests.RequestException:
        pass


def test_refuses_non_loopback_host() -> None:
    """Exits non-zero with a clear message when asked to bind a non-loopback address."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.upstream",
            "--port",
            "0",
            "--host",
            "0.0.0.0",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode != 0
    assert "loopback" in result.stderr
    assert result.stdout == ""
