"""Tests for the upstream pools (one per origin, reuse, idle limit, shared
address lookups), against the real stub upstream."""

import os
import time

import gevent
import pytest
import requests
from django.test import override_settings
from geventhttpclient.connectionpool import ConnectionPool

from project.core.caller import caller_scope
from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out
from project.core.outbound import pool as http_pool
from project.core.outbound.client import http_get
from project.core.request_context import with_request_id_header


def _stats(upstream: str) -> dict:
    return requests.get(f"{upstream}/stats", timeout=5).json()


def test_pool_is_one_per_origin(fresh_pools):
    """One pool per upstream origin (scheme, host, port), reused across calls."""
    pool = http_pool.get_pool("http", "127.0.0.1", 9)
    assert http_pool.get_pool("http", "127.0.0.1", 9) is pool
    assert http_pool.get_pool("http", "127.0.0.1", 10) is not pool


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
def test_looked_up_address_is_kept_for_the_ttl(
    fresh_pools, lookups, monkeypatch, ttl, expected
):
    """Within DNS_TTL_S a pool reuses its address; after it, it looks again."""
    monkeypatch.setattr(http_pool, "DNS_TTL_S", ttl)
    pool = http_pool.get_pool("http", "127.0.0.1", 9)._connection_pool
    for _ in range(3):
        assert pool._resolve()[0][4] == ("127.0.0.1", 9)
    assert len(lookups) == expected


def test_a_killed_lookup_is_done_again_by_its_waiters(fresh_pools, lookups):
    """A waiter whose shared lookup was killed (its leg timed out) looks up itself."""
    pool = http_pool.get_pool("http", "127.0.0.1", 9)._connection_pool
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


def test_critical_calls_do_not_queue_behind_sheddable_legs(upstream, fresh_pools):
    """Four connections, twenty half-second sheddable legs: a critical call
    still takes one at once (sheddable callers hold three at most), and
    sheddable ones keep waiting their turn."""
    requests.post(f"{upstream}/stats/reset", timeout=5)

    def sheddable() -> int:
        with caller_scope(client="flood", traffic_class="sheddable"):
            return http_get(f"{upstream}/delay?ms=500", timeout=5).status_code

    def critical() -> float:
        with caller_scope(client="api", traffic_class="critical"):
            started = time.monotonic()
            assert http_get(f"{upstream}/delay?ms=10", timeout=5).status_code == 200
            return time.monotonic() - started

    with override_settings(HTTP_POOL_MAXSIZE=4):
        flood = [gevent.spawn(sheddable) for _ in range(20)]
        gevent.sleep(0.05)
        waits = [gevent.spawn(critical).get(timeout=5) for _ in range(3)]
        gevent.joinall(flood, raise_error=True)
    assert max(waits) < 0.25
    assert {g.value for g in flood} == {200}
    assert _stats(upstream)["connections"] <= 4


def test_clients_waiting_for_connections_take_turns(upstream, fresh_pools):
    """One connection; a client queues ten calls before another queues one:
    after the call in progress and the busy client's turn, it is the
    polite client's (third served, not eleventh)."""
    order: list[str] = []

    def leg(client: str) -> None:
        with caller_scope(client=client):
            http_get(f"{upstream}/delay?ms=20", timeout=5)
            order.append(client)

    with override_settings(HTTP_POOL_MAXSIZE=1):
        greenlets = [gevent.spawn(leg, "busy") for _ in range(10)]
        gevent.sleep(0.005)
        greenlets.append(gevent.spawn(leg, "polite"))
        gevent.joinall(greenlets, raise_error=True)
    assert order.index("polite") == 2


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"Authorization": "Bearer t"}, {"x-request-id": "mine"}],
    ids=["none", "empty", "auth", "own id"],
)
@pytest.mark.parametrize("request_id", [None, "rid-1", "a" * 64])
def test_request_is_what_the_builder_writes(fresh_pools, headers, request_id):
    """A remembered head with the id put in is the builder's request, byte for byte."""
    client = http_pool.get_pool("http", "127.0.0.1", 9)
    for _ in range(2):  # built, then remembered
        for target in ("/delay?ms=50", "/other"):
            built = client._build_request(
                "GET",
                target,
                headers=with_request_id_header(headers, request_id),
                chunked=False,
            )
            assert client.get_request(target, headers, request_id) == built


def test_request_id_that_is_not_plain_ascii_goes_the_builders_way(fresh_pools):
    """The builder's checks stand: a tab passes, a line break is refused."""
    client = http_pool.get_pool("http", "127.0.0.1", 9)
    assert "X-Request-ID: a\tb\r\n" in client.get_request("/", None, "a\tb")
    with pytest.raises(ValueError, match="invalid value"):
        client.get_request("/", None, "a\r\nHost: evil")


def test_remembered_heads_are_bounded(fresh_pools, monkeypatch):
    """Past the bound the oldest head goes; what is left still builds right."""
    monkeypatch.setattr(http_pool, "MAX_REQUEST_HEADS", 3)
    client = http_pool.get_pool("http", "127.0.0.1", 9)
    for n in range(5):
        assert f"GET /item?id={n} HTTP/1.1\r\n" in client.get_request(
            f"/item?id={n}", None, "rid"
        )
    assert len(client._heads) == 3
