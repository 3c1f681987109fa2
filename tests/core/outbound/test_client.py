"""Tests for the outbound HTTP client, against the real stub upstream."""

import gc
import time

import gevent
import pytest
import requests
from django.test import override_settings

from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out
from project.core.outbound import client
from project.core.outbound.client import http_get
from project.core.outbound.wire import UpstreamBodyTooLarge
from tests.helpers import socket_count


def _stats(upstream: str) -> dict:
    return requests.get(f"{upstream}/stats", timeout=5).json()


def test_killed_call_does_not_return_a_half_read_connection(upstream, fresh_pools):
    """A call killed mid-body closes its socket; the next call reads its own answer."""
    with override_settings(HTTP_POOL_MAXSIZE=1):
        for _ in range(3):
            greenlet = gevent.spawn(
                http_get, f"{upstream}/trickle?chunks=20&interval_ms=20", timeout=5
            )
            gevent.sleep(0.1)
            greenlet.kill()
            with pytest.raises(TimeoutError):
                http_get(f"{upstream}/trickle?chunks=20&interval_ms=20", timeout=0.1)
            answer = http_get(f"{upstream}/delay", timeout=2)
            assert answer.json()["slept_ms"] == 0


def test_calls_cut_while_waiting_for_headers_free_their_slots(upstream, fresh_pools):
    """Calls timed out before the answer leave the pool's slots free for the next."""
    with override_settings(HTTP_POOL_MAXSIZE=2):
        for _ in range(5):
            with pytest.raises(TimeoutError):
                http_get(f"{upstream}/delay?ms=500", timeout=0.05)
        gc.collect()
        started = time.monotonic()
        assert http_get(f"{upstream}/delay", timeout=2).status_code == 200
    assert time.monotonic() - started < 0.5


def test_killed_calls_leak_no_sockets(upstream, fresh_pools):
    """Twenty calls cut mid-body leave no socket open behind them."""
    http_get(f"{upstream}/delay", timeout=2)
    before = socket_count()
    for _ in range(20):
        with pytest.raises(TimeoutError):
            http_get(f"{upstream}/trickle?chunks=20&interval_ms=20", timeout=0.05)
    gc.collect()
    assert socket_count() <= before


def test_connection_closed_before_an_answer_is_retried_at_most_once(
    upstream, fresh_pools
):
    """An upstream that resets every connection sees at most two requests per call."""
    requests.post(f"{upstream}/stats/reset", timeout=5)
    with pytest.raises(ConnectionError):
        http_get(f"{upstream}/reset", timeout=2)
    assert _stats(upstream)["requests"]["/reset"] <= 2


def test_reset_connection_is_a_connection_error(upstream, fresh_pools):
    """An upstream that resets the connection gives ConnectionError."""
    with pytest.raises(ConnectionError):
        http_get(f"{upstream}/reset", timeout=2)


@pytest.mark.parametrize(
    "path",
    ["/trickle?chunks=20&interval_ms=5", "/trickle?chunks=20&interval_ms=5&chunked=1"],
    ids=["declared length", "chunked"],
)
def test_body_over_the_limit_is_an_error_and_not_pooled(upstream, fresh_pools, path):
    """A 200-byte body over a 99-byte cap fails; its half-read connection is closed."""
    requests.post(f"{upstream}/stats/reset", timeout=5)
    with pytest.raises(UpstreamBodyTooLarge, match="larger than 99 bytes"):
        http_get(f"{upstream}{path}", timeout=2, max_body_bytes=99)
    assert (
        len(http_get(f"{upstream}{path}", timeout=2, max_body_bytes=200).content) == 200
    )
    assert _stats(upstream)["connections"] == 2


def test_body_limit_defaults_to_the_constant(upstream, fresh_pools, monkeypatch):
    """MAX_BODY_BYTES applies when the caller passes no limit."""
    monkeypatch.setattr(client, "MAX_BODY_BYTES", 10)
    with pytest.raises(UpstreamBodyTooLarge):
        http_get(f"{upstream}/delay", timeout=2)


def test_non_http_url_is_refused():
    """Only absolute http(s) URLs are fetched."""
    with pytest.raises(ValueError):
        http_get("file:///etc/passwd", timeout=1)


def test_gets_from_upstream(upstream):
    """Returns the upstream's response."""
    response = http_get(f"{upstream}/delay", params={"ms": 10}, timeout=2)
    assert response.status_code == 200
    assert response.json()["slept_ms"] == 10


def test_read_timeout_becomes_timeout_error(upstream):
    """An upstream slower than the timeout raises TimeoutError."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        http_get(f"{upstream}/delay", params={"ms": 2000}, timeout=0.2)
    assert time.monotonic() - started < 1.0


def test_connection_refused_is_an_error_not_a_hang():
    """A closed port fails at once, without naming the upstream's address."""
    from devtools.ports import free_port

    port = free_port()
    with pytest.raises(ConnectionError) as caught:
        http_get(f"http://127.0.0.1:{port}/", timeout=2)
    assert str(port) not in str(caught.value)


def test_trickling_body_is_cut_at_the_deadline(upstream):
    """A trickling body is cut by the leg's total timeout, not per read."""

    def call(timeout: float) -> int:
        response = http_get(
            f"{upstream}/trickle",
            params={"chunks": 50, "interval_ms": 100},
            timeout=timeout,
        )
        return len(response.content)

    started = time.monotonic()
    results = fan_out([Leg("trickle", call)], deadline=Deadline(0.5), max_concurrency=1)
    assert time.monotonic() - started < 1.2
    assert results[0].status == "timeout"


def test_ten_upstream_calls_run_concurrently(upstream):
    """Ten 0.5 s upstream calls finish in under 2 s."""
    legs = [
        Leg(
            "http",
            lambda t: (
                http_get(f"{upstream}/delay", params={"ms": 500}, timeout=t).status_code
            ),
        )
        for _ in range(10)
    ]
    started = time.monotonic()
    results = fan_out(legs, deadline=Deadline(5), max_concurrency=100)
    assert time.monotonic() - started < 2.0
    assert [r.value for r in results] == [200] * 10


@pytest.mark.parametrize(
    "url, params, target",
    [
        ("http://h:1/p?a=1", None, "/p?a=1"),
        ("http://h:1/p?a=1", {"b": "x y"}, "/p?a=1&b=x+y"),
        ("http://h:1/p", {"b": 2}, "/p?b=2"),
        ("http://h:1", None, "/"),
        ("http://h:1?", {}, "/"),
    ],
)
def test_url_and_params_make_the_request_target(url, params, target):
    """The URL is split once; parameters join its query."""
    assert client._split(url, params) == ("http", "h", 1, target)
