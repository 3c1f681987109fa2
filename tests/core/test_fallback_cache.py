"""FallbackCache over a real redis-server: shared by workers, safe when Redis fails."""

import logging
import socket
import time
import uuid
from collections.abc import Iterator

import gevent
import pytest
import redis
from prometheus_client import REGISTRY

from project.core import fallback_cache
from project.core.fallback_cache import FallbackCache
from settings.base import REDIS_TIMEOUT_MS, shared_cache

LOGGER = "project.core.fallback_cache"


def worker_cache(
    url: str, name: str, cool_off_s: float = 0.2, **options: int
) -> FallbackCache:
    """One "worker's" cache as settings build it: own state, own memory, same Redis."""
    config = shared_cache(
        url, REDIS_TIMEOUT_MS, name=name, cool_off_s=cool_off_s, **options
    )
    config = dict(config)
    return FallbackCache(config.pop("LOCATION"), config)


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Fresh cache names (state and memory are per name); forgotten afterwards."""
    made = [f"test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield made
    states = fallback_cache._states.get()
    for name in made:
        states.pop(name, None)


def fallbacks(name: str, operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "gd_cache_fallback_total", {"cache": name, "operation": operation}
    )
    return value or 0.0


def test_a_value_set_by_one_worker_is_read_by_another(redis_server, names):
    first = worker_cache(redis_server.url, names[0])
    second = worker_cache(redis_server.url, names[1])
    first.set("greeting", {"hello": "world"}, 30)
    assert second.get("greeting") == {"hello": "world"}
    # Not the second worker's memory: it never saw the value.
    assert second.local.get("greeting") is None
    second.delete("greeting")
    assert first.get("greeting") is None


def test_redis_stopped_serves_memory_counts_warns_once_and_comes_back(
    redis_server, names, caplog
):
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = worker_cache(redis_server.url, names[0], cool_off_s=0.3)
    cache.set("kept", "before the outage", 60)
    assert cache.get("kept") == "before the outage"
    redis_server.stop()

    before = fallbacks(names[0], "get")
    started = time.monotonic()
    for _ in range(5):
        # Written through to memory while Redis was up: still served.
        assert cache.get("kept") == "before the outage"
    assert time.monotonic() - started < 1.0
    cache.set("during", "the outage", 60)
    assert cache.get("during") == "the outage"
    assert not cache.primary_is_up()
    assert fallbacks(names[0], "get") - before == 6
    warnings = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "ConnectionError" in warnings[0].getMessage()

    redis_server.start()
    gevent.sleep(0.35)  # past the cool-off: the next call probes Redis
    assert cache.get("during") is None  # Redis again, which never saw it
    assert cache.primary_is_up()
    cache.set("after", "back", 60)
    assert worker_cache(redis_server.url, names[1]).get("after") == "back"
    backs = [r for r in caplog.records if "back after" in r.getMessage()]
    assert len(backs) == 1


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A "Redis" that accepts connections (the kernel's backlog) but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()


def test_a_silent_redis_costs_one_timeout_without_blocking_the_loop(
    silent_redis, names, caplog
):
    cache = worker_cache(silent_redis, names[0], cool_off_s=5)
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.01)
            ticks += 1

    ticker = gevent.spawn(tick)
    try:
        gevent.sleep(0)
        started = time.monotonic()
        # Bounded here too: without its socket timeouts the get would hang.
        with gevent.Timeout(3):
            assert cache.get("anything", "default") == "default"
        elapsed = time.monotonic() - started
    finally:
        ticker.kill()
    assert REDIS_TIMEOUT_MS / 1000 * 0.8 <= elapsed < 1.0
    # The loop ran other greenlets while this one waited on the socket.
    assert ticks >= elapsed / 0.01 * 0.5
    assert fallbacks(names[0], "get") == 1
    assert "TimeoutError" in caplog.text

    # Cooling off: no more timeouts, memory serves at once.
    started = time.monotonic()
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert time.monotonic() - started < 0.05


def test_a_caller_deadline_inside_a_call_is_no_verdict_on_redis(silent_redis, names):
    """gevent.Timeout (the request's deadline) ends the call: raised, not counted,
    and Redis is not skipped because of it."""
    cache = worker_cache(silent_redis, names[0], cool_off_s=5)
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.03):
        cache.get("anything")
    assert fallbacks(names[0], "get") == 0
    assert cache.primary_is_up()
    # The next call still goes to Redis (and meets its own timeout there).
    started = time.monotonic()
    with gevent.Timeout(3):
        assert cache.get("anything") is None
    assert time.monotonic() - started >= REDIS_TIMEOUT_MS / 1000 * 0.8
    assert fallbacks(names[0], "get") == 1


def test_a_redis_that_refuses_writes_serves_memory(redis_server, names):
    """Out of memory under noeviction, Redis answers a set with an error (not a
    broken connection): the cache still takes the value, in memory, counted."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    try:
        cache = worker_cache(redis_server.url, names[0])
        before = fallbacks(names[0], "set")
        cache.set("big", "x" * 1000, 60)
        assert fallbacks(names[0], "set") - before == 1
        assert not cache.primary_is_up()
        assert cache.get("big") == "x" * 1000
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()


def test_a_worker_opens_at_most_max_connections(redis_server, names):
    """50 concurrent requests' cache calls share 3 connections, waiting their
    turn (well within the timeout), none falling back to memory."""
    cache = worker_cache(redis_server.url, names[0], max_connections=3)
    cache.set("shared", "value", 60)
    before = fallbacks(names[0], "get")

    def reads() -> list:
        return [cache.get("shared") for _ in range(5)]

    greenlets = [gevent.spawn(reads) for _ in range(50)]
    gevent.joinall(greenlets, timeout=10)
    assert [g.value for g in greenlets] == [["value"] * 5] * 50
    assert fallbacks(names[0], "get") == before
    admin = redis.Redis.from_url(redis_server.url)
    try:
        # Ours, and the admin connection asking.
        assert admin.info("clients")["connected_clients"] <= 3 + 1
    finally:
        admin.close()
