"""Aggregations cached in a real Redis: shared by workers, still answering when it dies.

Each ``Aggregator`` stands for one worker (or host): its own ``FallbackCache``
state and memory, the same Redis. The sources call a stub upstream of the
test's own, which the test stops to see stale-if-error served from memory.
"""

import logging
import uuid
from collections.abc import Iterator

import gevent
import pytest
from prometheus_client import REGISTRY

from devtools.processes import stop as stop_process
from project.aggregation.engine import Aggregator
from project.aggregation.registry import parse_registry
from project.core import fallback_cache
from project.core.deadline import Deadline
from project.core.fallback_cache import FallbackCache
from settings.base import REDIS_TIMEOUT_MS, shared_cache

from .test_engine import stub_counts

COOL_OFF_S = 0.3
REGISTRY_TOML = """\
[upstreams.stub]
base_url = "${STUB}"
timeout_ms = 500
breaker = { window = 1000, min_calls = 1000 }

[aggregations.cached]
deadline_ms = 1000
sources.s = { upstream = "stub", path = "/delay", cache_ttl_s = 0.5, stale_ttl_s = 60, query = { ms = "5" } }
"""  # noqa: E501


@pytest.fixture
def worker(redis_server, own_upstream) -> Iterator:
    """Makes "workers": an Aggregator each, with its own FallbackCache over Redis."""
    names: list[str] = []

    def make() -> Aggregator:
        name = f"agg-{uuid.uuid4().hex[:8]}"
        names.append(name)
        config = dict(
            shared_cache(
                redis_server.url,
                REDIS_TIMEOUT_MS,
                name=name,
                cool_off_s=COOL_OFF_S,
            )
        )
        cache = FallbackCache(config.pop("LOCATION"), config)
        registry = parse_registry(REGISTRY_TOML, environ={"STUB": own_upstream[0]})
        return Aggregator(registry, cache=cache)

    yield make
    states = fallback_cache._states.get()
    for name in names:
        states.pop(name, None)


def run(agg: Aggregator) -> dict:
    aggregation = agg.registry.aggregations["cached"]
    result = agg.run(aggregation, aggregation.parse_params({}), Deadline.from_ms(1000))
    assert result.status == 200, result.body
    return result.body["sources"]["s"]


def test_a_source_cached_by_one_worker_is_a_hit_in_another(worker, own_upstream):
    first, second = worker(), worker()
    assert "cache" not in run(first)
    hit = run(second)
    assert hit["status"] == "ok" and hit["cache"] == "hit"
    assert stub_counts(own_upstream[0]) == {"/delay": 1}


def test_redis_down_serves_memory_then_redis_again(
    worker, own_upstream, redis_server, caplog
):
    caplog.set_level(logging.INFO, logger="project.core.fallback_cache")
    agg = worker()
    cache = agg.cache.cache
    assert isinstance(cache, FallbackCache)
    label = {"cache": cache.name, "operation": "get"}
    assert run(agg)["status"] == "ok"

    redis_server.stop()
    fresh = run(agg)  # within cache_ttl_s: a hit, from this worker's memory
    assert fresh["status"] == "ok" and fresh["cache"] == "hit"
    gevent.sleep(0.55)  # past cache_ttl_s
    stop_process(own_upstream[1])
    stale = run(agg)  # the upstream fails: the stale value, from memory
    assert stale["status"] == "stale"
    assert REGISTRY.get_sample_value("gd_cache_fallback_total", label) >= 3
    warnings = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert len(warnings) == 1

    redis_server.start()
    gevent.sleep(COOL_OFF_S + 0.05)
    # Back on Redis, which restarted empty: no stale value any more (memory
    # still has one, but is only read while Redis fails).
    assert run_status(agg) == "error"
    assert cache.primary_is_up()
    backs = [r for r in caplog.records if "back after" in r.getMessage()]
    assert len(backs) == 1


def run_status(agg: Aggregator) -> str:
    aggregation = agg.registry.aggregations["cached"]
    result = agg.run(aggregation, aggregation.parse_params({}), Deadline.from_ms(1000))
    return result.body["sources"]["s"]["status"]


LIVE_TOKEN = "shared-cache-token-0123456789"
LIVE_REGISTRY = """\
[upstreams.stub]
base_url = "${AGG_TEST_STUB}"

[aggregations.cached]
sources.s = { upstream = "stub", path = "/delay", cache_ttl_s = 60, query = { ms = "5" } }
"""  # noqa: E501


def test_two_gunicorn_hosts_share_the_cache_through_redis(
    start_gunicorn, test_database_url, redis_server, own_upstream, tmp_path
):
    """Two services (hosts) on one Redis: the second answers from the first's call."""
    registry = tmp_path / "aggregations.toml"
    registry.write_text(LIVE_REGISTRY)
    hosts = [
        start_gunicorn(
            test_database_url,
            AGGREGATIONS_FILE=str(registry),
            AGG_TEST_STUB=own_upstream[0],
            AGGREGATION_API_TOKENS=LIVE_TOKEN,
            REDIS_URL=redis_server.url,
        )
        for _ in range(2)
    ]
    headers = {"Authorization": f"Bearer {LIVE_TOKEN}"}
    first, second = (
        host.get("/api/aggregate/cached/", headers=headers).json()["sources"]["s"]
        for host in hosts
    )
    assert first["status"] == second["status"] == "ok"
    assert "cache" not in first and second["cache"] == "hit"
    assert stub_counts(own_upstream[0]) == {"/delay": 1}
