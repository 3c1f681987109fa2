"""The outbound client against a hostile upstream (``/hostile`` on the real stub)."""

import os
import resource
import time

import gevent
import pytest
from django.test import override_settings

from project.core.outbound import (
    LocalSocketsExhausted,
    UpstreamInvalidJSON,
    client,
    http_get,
)
from project.core.outbound.pool import open_sockets
from project.core.outbound.response import parse_json
from project.core.outbound.wire import (
    HeaderLimits,
    UpstreamHeadersTooLarge,
    UpstreamProtocolError,
)
from tests.helpers import socket_count

pytestmark = pytest.mark.usefixtures("fresh_pools")


def _timed(call, *args, **kwargs):
    started = time.monotonic()
    try:
        return call(*args, **kwargs), time.monotonic() - started
    except Exception as exc:
        return exc, time.monotonic() - started


class _LoopLag:
    """The longest the event loop kept a 10 ms timer waiting (seconds late)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.running = True
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while self.running:
            started = time.monotonic()
            gevent.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - started - 0.01)

    def stop(self) -> float:
        self.running = False
        self.greenlet.join()
        return self.worst


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("header_line", "headers over 65536 bytes"),
        ("headers", "more than 100 header lines"),
        ("interim", "more than 5 interim 1xx answers"),
        ("status_line", "status line over 8192 bytes"),
    ],
)
def test_endless_headers_fail_at_once(upstream, mode, problem):
    """Each never-ending header phase fails as 'headers too large' in well under 1 s."""
    result, elapsed = _timed(http_get, f"{upstream}/hostile?mode={mode}", timeout=2.0)
    assert isinstance(result, UpstreamHeadersTooLarge), result
    assert str(result) == f"upstream headers too large ({problem})"
    assert elapsed < 0.5
    assert sum(open_sockets().values()) == 0  # closed, not pooled


def test_fifty_hostile_calls_leave_the_loop_responsive(upstream):
    """50 concurrent endless-header calls: the loop is never held for long."""
    lag = _LoopLag()
    modes = ["header_line", "headers", "interim", "status_line", "gzip_bomb"]
    calls = [
        gevent.spawn(
            _timed, http_get, f"{upstream}/hostile?mode={modes[i % 5]}", timeout=2.0
        )
        for i in range(50)
    ]
    gevent.joinall(calls, timeout=5)
    assert lag.stop() < 0.25  # blocked, it would be the whole call (2 s)
    results = [call.value for call in calls]
    assert all(isinstance(error, UpstreamProtocolError) for error, _ in results)
    assert max(elapsed for _, elapsed in results) < 2.0 + 0.1


def test_deadline_interrupts_endless_header_streams(upstream, monkeypatch):
    """With the limits out of the way, 20 endless header streams at once: the
    deadline still cuts each on time and the loop is never held for long."""
    unlimited = HeaderLimits(total_bytes=1 << 30, count=1 << 30)
    monkeypatch.setattr(client, "HEADER_LIMITS", unlimited)
    lag = _LoopLag()
    calls = [
        gevent.spawn(_timed, http_get, f"{upstream}/hostile?mode=headers", timeout=0.3)
        for _ in range(20)
    ]
    gevent.joinall(calls, timeout=5)
    assert lag.stop() < 0.25  # blocked, it would be the whole call (2 s)
    for result, elapsed in (call.value for call in calls):
        assert isinstance(result, TimeoutError)
        # Cut at its 0.3 s, not after the stream's 2 s; wide for a loaded machine.
        assert 0.3 <= elapsed < 0.9


@pytest.mark.parametrize("mode", ["gzip", "gzip_bomb"])
def test_encoded_bodies_are_refused(upstream, mode):
    """We ask for identity; a gzip body (or bomb) is an error, never decoded."""
    result, elapsed = _timed(http_get, f"{upstream}/hostile?mode={mode}", timeout=2)
    assert isinstance(result, UpstreamProtocolError)
    assert "'gzip'-encoded body" in str(result)
    assert elapsed < 1.0


def test_identity_is_what_we_ask_for(upstream):
    """The request says Accept-Encoding: identity."""
    sent = http_get(f"{upstream}/headers", timeout=2).json()
    assert sent["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("json_invalid", "invalid JSON: "),
        ("json_nan", "invalid JSON: NaN is not JSON"),
        ("json_deep", "invalid JSON: nested too deeply"),
    ],
)
def test_json_is_parsed_strictly(upstream, mode, message):
    """Invalid JSON, NaN/Infinity and deep nesting are all UpstreamInvalidJSON."""
    response = http_get(f"{upstream}/hostile?mode={mode}", timeout=2)
    with pytest.raises(UpstreamInvalidJSON) as caught:
        response.json()
    assert str(caught.value).startswith(message)


def test_nesting_deeper_than_the_limit_is_refused():
    """65 levels fail; 64 pass; many shallow brackets are fine."""
    assert parse_json(b"[" * 64 + b"]" * 64)
    with pytest.raises(UpstreamInvalidJSON, match="nested deeper than 64"):
        parse_json(b"[" * 65 + b"]" * 65)
    assert len(parse_json(b"[" + b"[1]," * 500 + b"[]]")) == 501


def test_stray_bytes_never_reach_a_later_call(upstream):
    """Stray bytes after an answer: the next calls get their own bodies, untouched."""
    expected = http_get(f"{upstream}/delay?ms=0", timeout=2).content
    # The stray bytes arrive while the next call waits for its answer...
    http_get(f"{upstream}/hostile?mode=stray&ms=50", timeout=2)
    during = http_get(f"{upstream}/delay?ms=200", timeout=2)
    # ...or while the connection waits idle in the pool.
    http_get(f"{upstream}/hostile?mode=stray&ms=0", timeout=2)
    time.sleep(0.2)
    after = http_get(f"{upstream}/delay?ms=0", timeout=2)
    assert during.status_code == after.status_code == 200
    assert during.content.startswith(b'{"slept_ms": 200')
    assert after.content == expected


def test_connection_close_is_honoured(upstream):
    """An answer with Connection: close is not pooled."""
    http_get(f"{upstream}/hostile?mode=close", timeout=2)
    assert sum(open_sockets().values()) == 0
    http_get(f"{upstream}/delay", timeout=2)
    assert sum(open_sockets().values()) == 1


@override_settings(HTTP_POOL_IDLE_S=0.3)
def test_idle_connections_are_closed(upstream):
    """A burst's sockets are closed once idle for HTTP_POOL_IDLE_S."""
    before = socket_count()
    calls = [
        gevent.spawn(http_get, f"{upstream}/delay?ms=100", timeout=2) for _ in range(20)
    ]
    gevent.joinall(calls, raise_error=True)
    assert sum(open_sockets().values()) == 20
    gevent.sleep(0.8)
    assert sum(open_sockets().values()) == 0
    assert socket_count() <= before


def test_out_of_file_descriptors_is_its_own_error(upstream):
    """EMFILE on connect is LocalSocketsExhausted (the caller sheds), then recovers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 50, hard))
    filler = []
    try:
        with pytest.raises(OSError):  # take every descriptor left
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        result, _ = _timed(http_get, f"{upstream}/delay", timeout=2)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert isinstance(result, LocalSocketsExhausted), result
    assert http_get(f"{upstream}/delay", timeout=2).status_code == 200
