"""The database families move with the pool's and the queries' own traffic."""

import gc

import gevent
import pytest
from django.test import override_settings

from project.core import metrics
from project.core.pg_pool.errors import PoolFull, PoolTimeout
from project.core.pg_pool.stats import MeteredPoolStats, PoolStats
from project.core.sql import run_query
from tests.core.test_pg_pool import FakeConnection, make_pool
from tests.metrics_samples import sample


def test_saturated_pool_shows_waiting_checkouts_and_their_wait():
    """With the only connection out, a queued checkout is waiting and its wait timed."""
    size = sample("gd_db_pool_size")
    pool = make_pool(size=1)  # one connection: the second checkout must queue
    assert sample("gd_db_pool_size") == size + 1
    in_use = sample("gd_db_pool_connections", state="in_use")
    idle = sample("gd_db_pool_connections", state="idle")
    waiting = sample("gd_db_pool_waiting")
    waits = sample("gd_db_pool_checkout_wait_seconds_count")
    waited = sample("gd_db_pool_checkout_wait_seconds_sum")

    held = pool.checkout(FakeConnection, timeout=1)
    assert sample("gd_db_pool_connections", state="in_use") == in_use + 1
    queued = gevent.spawn(pool.checkout, FakeConnection, timeout=2)
    gevent.sleep(0.1)
    assert sample("gd_db_pool_waiting") == waiting + 1
    pool.checkin(held)
    handed = queued.get(timeout=1)
    assert sample("gd_db_pool_waiting") == waiting
    assert sample("gd_db_pool_checkout_wait_seconds_count") == waits + 2
    assert sample("gd_db_pool_checkout_wait_seconds_sum") - waited >= 0.09
    pool.checkin(handed)
    assert sample("gd_db_pool_connections", state="in_use") == in_use
    assert sample("gd_db_pool_connections", state="idle") == idle + 1


def test_pool_events_are_counted():
    """Timeouts, refusals, connections created, discarded and reclaimed."""

    def events(event: str) -> float:
        return sample("gd_db_pool_events_total", event=event)

    before = {e: events(e) for e in ("timeout", "refused", "created", "discarded")}
    reclaimed = events("reclaimed")
    pool = make_pool(size=1, max_waiting=1)
    held = pool.checkout(FakeConnection, timeout=1)
    with pytest.raises(PoolTimeout):
        pool.checkout(FakeConnection, timeout=0.05)
    queued = gevent.spawn(pool.checkout, FakeConnection, timeout=2)
    gevent.sleep(0.05)
    with pytest.raises(PoolFull):
        pool.checkout(FakeConnection, timeout=1)
    pool.checkin(held, discard=True)  # closed; the waiter opens a new one
    queued.get(timeout=1)  # and its greenlet ends without giving it back
    pool.maintain()
    assert events("timeout") == before["timeout"] + 1
    assert events("refused") == before["refused"] + 1
    assert events("created") == before["created"] + 2
    assert events("discarded") == before["discarded"] + 2
    assert events("reclaimed") == reclaimed + 1


def test_a_pool_collected_before_the_flush_has_its_changes_written():
    """What a pool counted between the last flush and its end is not lost."""
    created = sample("gd_db_pool_events_total", event="created")
    size = sample("gd_db_pool_size")
    pool = make_pool(size=3)
    pool.checkout(FakeConnection, timeout=1)
    del pool
    gc.collect()
    assert sample("gd_db_pool_events_total", event="created") == created + 1
    assert sample("gd_db_pool_size") == size + 3


def test_switched_off_the_pool_keeps_its_counters_only():
    """METRICS_ENABLED false: plain PoolStats, the gauges do not move."""
    metrics.enabled.cache_clear()  # read once per process: read it again here
    try:
        with override_settings(METRICS_ENABLED=False):
            size = sample("gd_db_pool_size")
            pool = make_pool(size=3)
            pool.checkin(pool.checkout(FakeConnection, timeout=1))
            assert type(pool.stats) is PoolStats
            assert sample("gd_db_pool_size") == size
    finally:
        metrics.enabled.cache_clear()
    assert isinstance(make_pool(size=1).stats, MeteredPoolStats)


@pytest.mark.django_db(transaction=True)
def test_query_durations_by_outcome_and_statement_timeouts():
    """ok, error and timeout queries are timed apart; a 57014 is counted."""

    def count(outcome: str) -> float:
        return sample("gd_db_query_duration_seconds_count", outcome=outcome)

    before = {outcome: count(outcome) for outcome in ("ok", "error", "timeout")}
    timed_out_s = sample("gd_db_query_duration_seconds_sum", outcome="timeout")
    cancelled = sample("gd_db_statement_timeouts_total")
    run_query("SELECT 1")
    with pytest.raises(Exception, match="no_such_table"):
        run_query("SELECT * FROM no_such_table")
    with pytest.raises(TimeoutError):
        run_query("SELECT pg_sleep(5)", timeout=0.1)
    assert count("ok") == before["ok"] + 1
    assert count("error") == before["error"] + 1
    assert count("timeout") == before["timeout"] + 1
    assert sample("gd_db_statement_timeouts_total") == cancelled + 1
    timed_out_s = (
        sample("gd_db_query_duration_seconds_sum", outcome="timeout") - timed_out_s
    )
    assert timed_out_s >= 0.09
