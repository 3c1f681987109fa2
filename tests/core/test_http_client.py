"""Tests for the outbound HTTP client, against the real stub upstream."""

import gc
import os
import time
from collections.abc import Iterator

import gevent
import pytest
import requests
from django.test import override_settings
from geventhttpclient.connectionpool import ConnectionPool

from conftest import socket_count
from project.core import http_client
from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out
from project.core.http_client import http_get
from project.core.http_wire import UpstreamBodyTooLarge
from project.core.per_process import PerProcess


@pytest.fixture
def fresh_pools(monkeypatch) -> Iterator[None]:
    """Each test starts with no pooled connections and leaves none behind."""
    monkeypatch.setattr(http_client, "_pools", PerProcess(dict))
    yield


def _stats(upstream: str) -> dict:
    return requests.get(f"{upstream}/stats", timeout=5).json()


def test_pool_is_one_per_origin(fresh_pools):
    """One pool per upstream origin (scheme, host, port), reused across calls."""
    pool = http_client.get_pool("http", "127.0.0.1", 9)
    assert http_client.get_pool("http", "127.0.0.1", 9) is pool
    assert http_client.get_pool("http", "127.0.0.1", 10) is not pool


def test_sequential_calls_reuse_one_connection(upstream, fresh_pools):
    """Keep-alive: twenty calls in a row open one connection."""
    requests.post(f"{upstream}/stats/reset", timeout=5)
    for _ in range(20):
        assert http_get(f"{upstream}/delay", timeout=2).status_code == 200
    assert _stats(upstream)["connections"] == 1


def test_connections_on_descriptors_above_1023_are_reused(upstream, fresh_pools):
    """A busy worker's sockets get fds > 1023, where ``select()`` fails."""
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        requests.post(f"{upstream}/stats/reset", timeout=5)
        for _ in range(20):
            assert http_get(f"{upstream}/delay", timeout=2).status_code == 200
    finally:
        for fd in filler:
            os.close(fd)
    assert _stats(upstream)["connections"] == 1


def test_concurrent_calls_keep_their_connections(upstream, fresh_pools):
    """Fifty legs at once, twice: the second burst reuses the first's connections."""

    def leg(timeout: float) -> int:
        return http_get(f"{upstream}/delay?ms=50", timeout=timeout).status_code

    requests.post(f"{upstream}/stats/reset", timeout=5)
    for _ in range(2):
        results = fan_out([Leg("http", leg)] * 50, deadline=Deadline(5))
        assert {r.value for r in results} == {200}
    assert _stats(upstream)["connections"] == 50


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """Records each real address lookup a pool makes (host names, in order)."""
    seen: list[str] = []
    original = ConnectionPool._resolve

    def counted(pool: ConnectionPool) -> list:
        seen.append(pool._connection_host)
        # Long enough for a burst of callers to arrive while it is in flight.
        gevent.sleep(0.05)
        return original(pool)

    monkeypatch.setattr(ConnectionPool, "_resolve", counted)
    return seen


def test_a_burst_of_new_connections_looks_the_host_up_once(
    upstream, fresh_pools, lookups
):
    """Fifty new connections at once share one lookup (not fifty thread-pool hops)."""

    def leg(timeout: float) -> int:
        return http_get(f"{upstream}/delay?ms=50", timeout=timeout).status_code

    requests.post(f"{upstream}/stats/reset", timeout=5)
    results = fan_out([Leg("http", leg)] * 50, deadline=Deadline(5))
    assert {r.value for r in results} == {200}
    assert _stats(upstream)["connections"] == 50
    assert lookups == ["127.0.0.1"]


@pytest.mark.parametrize(("ttl", "expected"), [(30.0, 1), (0.0, 3)])
def test_looked_up_address_is_kept_for_the_ttl(fresh_pools, lookups, ttl, expected):
    """Within HTTP_DNS_TTL_S a pool reuses its address; after it, it looks again."""
    with override_settings(HTTP_DNS_TTL_S=ttl):
        pool = http_client.get_pool("http", "127.0.0.1", 9)._connection_pool
    for _ in range(3):
        assert pool._resolve()[0][4] == ("127.0.0.1", 9)
    assert len(lookups) == expected


def test_a_killed_lookup_is_done_again_by_its_waiters(fresh_pools, lookups):
    """A waiter whose shared lookup was killed (its leg timed out) looks up itself."""
    pool = http_client.get_pool("http", "127.0.0.1", 9)._connection_pool
    leader = gevent.spawn(pool._resolve)
    gevent.sleep(0.01)
    waiter = gevent.spawn(pool._resolve)
    gevent.sleep(0.01)
    leader.kill()
    assert waiter.get(timeout=2)[0][4] == ("127.0.0.1", 9)
    assert len(lookups) == 2


def test_full_pool_makes_callers_wait_not_fail(upstream, fresh_pools):
    """With HTTP_POOL_MAXSIZE=2, ten calls share two connections, two at a time."""
    requests.post(f"{upstream}/stats/reset", timeout=5)
    with override_settings(HTTP_POOL_MAXSIZE=2):
        started = time.monotonic()
        greenlets = [
            gevent.spawn(http_get, f"{upstream}/delay?ms=100", timeout=5)
            for _ in range(10)
        ]
        gevent.joinall(greenlets, raise_error=True)
    assert {g.value.status_code for g in greenlets} == {200}
    assert time.monotonic() - started >= 0.45
    assert _stats(upstream)["connections"] == 2


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


def test_body_limit_defaults_to_the_setting(upstream, fresh_pools):
    """HTTP_MAX_BODY_BYTES applies when the caller passes no limit."""
    with override_settings(HTTP_MAX_BODY_BYTES=10):
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
    from conftest import free_port

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
