"""The aggregation families move with real aggregations (stub upstream, PostgreSQL)."""

import gevent
import pytest

from devtools.processes import stop as stop_process
from tests.aggregation.test_engine import aggregator, run
from tests.metrics_samples import sample

# SQL sources run in spawned greenlets on their own connections.
pytestmark = pytest.mark.django_db(transaction=True)


def sources(aggregation: str, source: str, status: str) -> float:
    return sample(
        "gd_aggregation_source_results_total",
        aggregation=aggregation,
        source=source,
        status=status,
    )


def partial(aggregation: str) -> float:
    return sample("gd_aggregation_partial_total", aggregation=aggregation)


def test_source_statuses_and_partial_answers(upstream):
    """An optional source past the deadline: its timeout counted, the answer partial."""
    agg = aggregator(upstream)
    before = (sources("slow", "fast", "ok"), sources("slow", "slow", "timeout"))
    partial_slow, partial_three = partial("slow"), partial("three")
    three_ok = sources("three", "c", "ok")
    assert run(agg, "slow", ms=2000).body["partial"] is True
    assert run(agg, "three", ms=1).body["partial"] is False
    assert sources("slow", "fast", "ok") == before[0] + 1
    assert sources("slow", "slow", "timeout") == before[1] + 1
    assert sources("three", "c", "ok") == three_ok + 1
    assert partial("slow") == partial_slow + 1
    assert partial("three") == partial_three


def test_cache_hits_misses_and_stale_values_served(own_upstream):
    """A miss fills the cache, a hit is served from it, a failure serves it stale."""
    url, process = own_upstream
    agg = aggregator(url)

    def cache(result: str) -> float:
        return sample(
            "gd_aggregation_cache_total",
            aggregation="cached",
            source="s",
            result=result,
        )

    before = {result: cache(result) for result in ("hit", "miss", "stale_served")}
    run(agg, "cached")
    run(agg, "cached")
    gevent.sleep(0.1)  # past cache_ttl_s
    stop_process(process)
    assert run(agg, "cached").body["sources"]["s"]["status"] == "stale"
    assert cache("miss") == before["miss"] + 2
    assert cache("hit") == before["hit"] + 1
    assert cache("stale_served") == before["stale_served"] + 1


def test_identical_calls_in_flight_join_the_first(upstream):
    """Five identical aggregations at once: four join each source's one call."""
    agg = aggregator(upstream)

    def joins(source: str) -> float:
        return sample(
            "gd_aggregation_singleflight_joins_total",
            aggregation="three",
            source=source,
        )

    before = {source: joins(source) for source in "abc"}
    greenlets = [gevent.spawn(run, agg, "three", ms=200) for _ in range(5)]
    gevent.joinall(greenlets, raise_error=True)
    assert {
        source: joins(source) - before[source] for source in "abc"
    } == dict.fromkeys("abc", 4)
