"""The bounded pool on its own, with fake connections (no server needed)."""

import time

import gevent
import pytest
from psycopg2 import extensions

from project.core.pg_pool.pool import ConnectionPool, PoolTimeout


class FakeConnection:
    """Enough of a psycopg2 connection for the pool: state, rollback, close."""

    class Info:
        def __init__(self) -> None:
            self.transaction_status = extensions.TRANSACTION_STATUS_IDLE

    def __init__(self) -> None:
        self.info = self.Info()
        self.closed = 0
        self.rolled_back = 0
        self.queries = 0

    def rollback(self) -> None:
        self.rolled_back += 1
        self.info.transaction_status = extensions.TRANSACTION_STATUS_IDLE

    def close(self) -> None:
        self.closed = 1

    def cursor(self):
        connection = self

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, sql):
                connection.queries += 1
                if connection.closed:
                    raise RuntimeError("dead")

        return Cursor()


def make_pool(size: int = 2, timeout: float = 0.2, check_idle_after: float = 30):
    return ConnectionPool(size=size, timeout=timeout, check_idle_after=check_idle_after)


def test_reuses_connections_without_extra_round_trips():
    """A connection given back is the next one handed out, with no health query."""
    pool = make_pool()
    first = pool.checkout(FakeConnection)
    pool.checkin(first)
    again = pool.checkout(FakeConnection)
    assert again is first
    assert first.queries == 0
    assert pool.stats.created == 1
    assert pool.stats.as_dict()["in_use"] == 1


def test_exhaustion_times_out_fast_and_recovers():
    """With every connection out, a checkout fails after the timeout, not a hang."""
    pool = make_pool(size=2, timeout=0.2)
    held = [pool.checkout(FakeConnection) for _ in range(2)]
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match="pool size 2"):
        pool.checkout(FakeConnection)
    assert 0.15 <= time.monotonic() - started < 0.6
    assert pool.stats.timeouts == 1
    pool.checkin(held[0])
    assert pool.checkout(FakeConnection) is held[0]


def test_size_is_never_exceeded_under_concurrency():
    """Fifty greenlets racing for a pool of 3 never hold more than 3 connections."""
    pool = make_pool(size=3, timeout=5)
    peak = [0]

    def work() -> None:
        connection = pool.checkout(FakeConnection)
        peak[0] = max(peak[0], pool.stats.in_use)
        gevent.sleep(0.01)
        pool.checkin(connection)

    gevent.joinall([gevent.spawn(work) for _ in range(50)], raise_error=True)
    assert peak[0] == 3
    assert pool.stats.created == 3
    assert pool.stats.in_use == 0
    assert pool.stats.idle == 3


def test_open_transaction_is_rolled_back_before_reuse():
    """A connection returned inside a transaction is rolled back and kept."""
    pool = make_pool()
    connection = pool.checkout(FakeConnection)
    connection.info.transaction_status = extensions.TRANSACTION_STATUS_INERROR
    pool.checkin(connection)
    assert connection.rolled_back == 1
    assert pool.checkout(FakeConnection) is connection


@pytest.mark.parametrize(
    "status",
    [extensions.TRANSACTION_STATUS_ACTIVE, extensions.TRANSACTION_STATUS_UNKNOWN],
)
def test_busy_or_broken_connection_is_discarded_alone(status):
    """A connection still running a query (or in an unknown state) is closed alone."""
    pool = make_pool(size=3)
    good = pool.checkout(FakeConnection)
    bad = pool.checkout(FakeConnection)
    pool.checkin(good)
    bad.info.transaction_status = status
    pool.checkin(bad)
    assert bad.closed and not good.closed
    assert pool.stats.discarded == 1
    assert pool.stats.idle == 1


def test_long_idle_connections_are_checked_and_dead_ones_replaced():
    """Only a connection idle past the threshold is probed; a dead one is replaced."""
    pool = make_pool(check_idle_after=0.05)
    connection = pool.checkout(FakeConnection)
    pool.checkin(connection)
    time.sleep(0.06)
    assert pool.checkout(FakeConnection) is connection  # probed, alive
    assert connection.queries == 1
    pool.checkin(connection)
    time.sleep(0.06)
    connection.close()  # died while idle
    fresh = pool.checkout(FakeConnection)
    assert fresh is not connection
    assert pool.stats.discarded == 1


def test_failed_connect_frees_its_slot():
    """A connect that raises does not use up a slot."""
    pool = make_pool(size=1)

    def refuse():
        raise OSError("server down")

    with pytest.raises(OSError):
        pool.checkout(refuse)
    assert pool.checkout(FakeConnection) is not None


def test_close_idle_closes_only_idle_connections():
    """close_idle closes what sits in the pool, not what is checked out."""
    pool = make_pool()
    out = pool.checkout(FakeConnection)
    idle = pool.checkout(FakeConnection)
    pool.checkin(idle)
    assert pool.close_idle() == 1
    assert idle.closed and not out.closed
