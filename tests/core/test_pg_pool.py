"""The pool's queueing, slot and lifecycle rules, with fake connections (no server)."""

import logging
import re
import time

import gevent
import gevent.event
import pytest

from project.core.pg_pool.errors import PoolFull, PoolTimeout
from project.core.pg_pool.pool import ConnectionPool


class FakeConnection:
    """Enough of a connection for the pool: a closed flag, a liveness switch."""

    def __init__(self) -> None:
        self.closed = 0
        self.alive = True
        self.checks = 0
        self.resets = 0

    def close(self) -> None:
        self.closed = 1


def _reset(connection: FakeConnection) -> bool:
    connection.resets += 1
    return not connection.closed


def _check(connection: FakeConnection) -> bool:
    connection.checks += 1
    return connection.alive


def make_pool(size: int | None = 2, **options) -> ConnectionPool:
    options.setdefault("reset", _reset)
    options.setdefault("check", _check)
    options.setdefault("readable", lambda connection: not connection.alive)
    return ConnectionPool(size=size, **options)


def test_reuses_connections_without_extra_round_trips():
    """A connection given back is the next one handed out, with no health check."""
    pool = make_pool()
    first = pool.checkout(FakeConnection, timeout=1)
    pool.checkin(first)
    again = pool.checkout(FakeConnection, timeout=1)
    assert again is first
    assert first.checks == 0
    assert pool.stats.created == 1
    assert pool.stats.in_use == 1


def test_wait_is_bounded_by_the_callers_timeout():
    """With every connection out, a checkout fails after its own timeout."""
    pool = make_pool(size=2)
    held = [pool.checkout(FakeConnection, timeout=1) for _ in range(2)]
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match="within 200 ms"):
        pool.checkout(FakeConnection, timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 0.6
    assert pool.stats.timeouts == 1
    assert pool.stats.waiting == 0
    pool.checkin(held[0])
    assert pool.checkout(FakeConnection, timeout=1) is held[0]


def test_no_time_left_fails_at_once():
    """A caller whose deadline has passed is refused without queueing."""
    pool = make_pool(size=1)
    pool.checkout(FakeConnection, timeout=1)
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.checkout(FakeConnection, timeout=0)
    assert time.monotonic() - started < 0.05


def test_waiters_are_served_first_come_first_served():
    """Freed connections go to the longest waiter; a newcomer cannot barge in."""
    pool = make_pool(size=1)
    held = pool.checkout(FakeConnection, timeout=1)
    served = []

    def wait(name: str) -> None:
        connection = pool.checkout(FakeConnection, timeout=5)
        served.append(name)
        gevent.sleep(0.01)
        pool.checkin(connection)

    waiters = []
    for name in "abc":
        waiters.append(gevent.spawn(wait, name))
        gevent.sleep(0.01)  # queue in this order
    assert pool.stats.waiting == 3
    pool.checkin(held)
    # The connection is promised to "a" although it has not run yet.
    with pytest.raises(PoolTimeout):
        pool.checkout(FakeConnection, timeout=0)
    gevent.joinall(waiters, raise_error=True)
    assert served == ["a", "b", "c"]
    assert pool.stats.created == 1


def test_queue_beyond_max_waiting_is_refused_at_once():
    """The max_waiting+1st waiter gets PoolFull immediately."""
    pool = make_pool(size=1, max_waiting=2)
    pool.checkout(FakeConnection, timeout=1)
    queued = [gevent.spawn(pool.checkout, FakeConnection, timeout=2) for _ in range(2)]
    gevent.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(PoolFull, match="2 requests already waiting"):
        pool.checkout(FakeConnection, timeout=2)
    assert time.monotonic() - started < 0.05
    assert pool.stats.rejected == 1
    gevent.killall(queued)


def test_size_is_never_exceeded_under_concurrency():
    """Fifty greenlets racing for a pool of 3 never hold more than 3 connections."""
    pool = make_pool(size=3)
    peak = [0]

    def work() -> None:
        connection = pool.checkout(FakeConnection, timeout=5)
        peak[0] = max(peak[0], pool.stats.in_use)
        gevent.sleep(0.01)
        pool.checkin(connection)

    gevent.joinall([gevent.spawn(work) for _ in range(50)], raise_error=True)
    assert peak[0] == 3
    assert pool.stats.created == 3
    assert (pool.stats.in_use, pool.stats.idle, pool.stats.waiting) == (0, 3, 0)


def test_waiter_killed_while_queued_loses_no_slot():
    """A waiter killed in line, even just after being granted, passes its turn on."""
    pool = make_pool(size=1)
    held = pool.checkout(FakeConnection, timeout=1)
    killed = gevent.spawn(pool.checkout, FakeConnection, timeout=5)
    gevent.sleep(0.01)
    pool.checkin(held)  # granted to the waiter, which has not run yet
    killed.kill()
    # Handed back at once, or (if the kill came after the grant landed)
    # reclaimed from the dead greenlet: either way the slot comes back.
    again = pool.checkout(FakeConnection, timeout=2)
    assert pool.stats.in_use == 1
    held = again
    timed_out = gevent.spawn(pool.checkout, FakeConnection, timeout=5)
    gevent.sleep(0.01)
    timed_out.kill()
    assert pool.stats.waiting == 0
    pool.checkin(held)
    assert pool.checkout(FakeConnection, timeout=0.1) is held


def test_failed_connect_passes_its_slot_on():
    """A connect that raises frees its slot, to a waiter if there is one."""
    pool = make_pool(size=1)

    def refuse():
        raise OSError("server down")

    with pytest.raises(OSError):
        pool.checkout(refuse, timeout=1)
    assert pool.checkout(FakeConnection, timeout=0.1) is not None


def test_connection_of_an_ended_greenlet_is_reclaimed_and_logged_once(caplog):
    """A greenlet that ends holding a connection does not keep its slot."""
    pool = make_pool(size=1)

    def forget_to_close() -> FakeConnection:
        return pool.checkout(FakeConnection, timeout=1)

    leaked = gevent.spawn(forget_to_close)
    leaked.join()
    assert leaked.dead and pool.stats.in_use == 1
    with caplog.at_level(logging.WARNING, logger="project.core.pg_pool.pool"):
        started = time.monotonic()
        fresh = pool.checkout(FakeConnection, timeout=3)
    assert time.monotonic() - started < 1.5
    assert fresh is not leaked.value and leaked.value.closed  # never handed on
    assert pool.stats.reclaimed == 1
    assert [r.message for r in caplog.records if "reclaimed" in r.message]
    # Where it was checked out, as file:line in function.
    message = caplog.records[-1].message
    assert re.search(r"test_pg_pool\.py:\d+ in forget_to_close( < | \(close)", message)
    pool.checkin(fresh)
    pool.checkin(leaked.value)  # the owner's late close is harmless
    assert (pool.stats.in_use, pool.stats.idle) == (0, 1)


def test_dead_idle_connection_is_replaced_and_its_elders_checked():
    """One broken connection found makes older idle ones suspect; fresh ones are not."""
    pool = make_pool(size=3)
    old, older = (pool.checkout(FakeConnection, timeout=1) for _ in range(2))
    pool.checkin(older)
    pool.checkin(old)
    old.alive = False  # the server went away while it sat idle
    replacement = pool.checkout(FakeConnection, timeout=1)
    assert replacement is not old and old.closed
    assert pool.stats.discarded == 1
    # "older" went idle before the failure was seen: checked before reuse.
    assert pool.checkout(FakeConnection, timeout=1) is older
    assert older.checks == 1
    pool.checkin(replacement)
    assert pool.checkout(FakeConnection, timeout=1) is replacement
    assert replacement.checks == 0


def test_long_idle_connection_is_checked_before_reuse():
    """Only a connection idle past check_idle_after costs a check."""
    pool = make_pool(check_idle_after=0.05)
    connection = pool.checkout(FakeConnection, timeout=1)
    pool.checkin(connection)
    time.sleep(0.06)
    assert pool.checkout(FakeConnection, timeout=1) is connection
    assert connection.checks == 1


def test_discard_and_failed_reset_close_the_connection():
    """checkin(discard=True), or a reset that fails, closes instead of keeping."""
    pool = make_pool(size=2)
    first, second = (pool.checkout(FakeConnection, timeout=1) for _ in range(2))
    pool.checkin(first, discard=True)
    second.closed = 2  # broke while in use
    pool.checkin(second)
    assert first.closed and second.closed
    assert (pool.stats.in_use, pool.stats.idle, pool.stats.discarded) == (0, 0, 2)
    assert len({id(pool.checkout(FakeConnection, timeout=0.1)) for _ in range(2)}) == 2


def test_lifetime_and_idle_limits_close_connections():
    """Past max_lifetime a connection is closed at checkin; maintain trims idle ones."""
    pool = make_pool(size=3, max_lifetime=0.05)
    connection = pool.checkout(FakeConnection, timeout=1)
    time.sleep(0.06)
    pool.checkin(connection)
    assert connection.closed and pool.stats.idle == 0

    pool = make_pool(size=3, max_idle=0.05, min_idle=1)
    held = [pool.checkout(FakeConnection, timeout=1) for _ in range(3)]
    for connection in held:
        pool.checkin(connection)
    time.sleep(0.06)
    pool.maintain()
    assert pool.stats.idle == 1
    assert sum(bool(connection.closed) for connection in held) == 2


def test_pool_sized_by_its_first_connection():
    """With a sizer, the first connection sets the size and the queue moves on."""
    pool = make_pool(size=None, sizer=lambda connection: 4)
    release = gevent.event.Event()

    def hold() -> None:
        connection = pool.checkout(FakeConnection, timeout=2)
        release.wait()
        pool.checkin(connection)

    holders = [gevent.spawn(hold) for _ in range(4)]
    gevent.sleep(0.05)
    assert pool.size == 4
    assert pool.stats.in_use == 4
    assert pool.stats.created == 4
    with pytest.raises(PoolTimeout):
        pool.checkout(FakeConnection, timeout=0.05)
    release.set()
    gevent.joinall(holders, raise_error=True)
    assert pool.stats.idle == 4


def test_close_idle_closes_only_idle_connections():
    """close_idle closes what sits in the pool, not what is checked out."""
    pool = make_pool()
    out = pool.checkout(FakeConnection, timeout=1)
    idle = pool.checkout(FakeConnection, timeout=1)
    pool.checkin(idle)
    assert pool.close_idle() == 1
    assert idle.closed and not out.closed


def test_wait_histogram_counts_every_checkout():
    """Each checkout lands in one bucket of the wait histogram."""
    pool = make_pool(size=1)
    connection = pool.checkout(FakeConnection, timeout=1)
    waiter = gevent.spawn(pool.checkout, FakeConnection, timeout=2)
    gevent.sleep(0.06)
    pool.checkin(connection)
    waiter.join()
    buckets = pool.stats.wait_ms_buckets
    assert sum(buckets) == 2
    assert sum(buckets[:3]) == 1  # the first one did not wait (within 1 ms)
    assert pool.stats.wait_ms_sum >= 50


def test_full_server_caps_the_pool_at_what_it_has():
    """PostgreSQL full (too many clients): a checkout waits for our own connections."""
    import psycopg2

    pool = make_pool(size=3, max_idle=60)
    held = pool.checkout(FakeConnection, timeout=1)

    def refuse():
        raise psycopg2.OperationalError("FATAL:  sorry, too many clients already")

    waiter = gevent.spawn(pool.checkout, refuse, timeout=2)
    gevent.sleep(0.05)
    assert pool.size == 1 and pool.stats.waiting == 1
    pool.checkin(held)
    assert waiter.get(timeout=1) is held
    pool.checkin(held)
    pool.maintain()
    assert pool.size == 3  # maintenance tries the configured size again
    with pytest.raises(psycopg2.OperationalError, match="too many clients"):
        empty = make_pool(size=3)
        empty.checkout(refuse, timeout=1)  # nothing of our own to wait for


def test_a_burst_opens_at_most_max_opening_connections_at_once():
    """100 checkouts at once on a pool of 50: never more than 2 connects in flight,
    and the pool grows only as far as the load needs (connections come back)."""
    in_flight, peak = [0], [0]

    def slow_connect() -> FakeConnection:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        gevent.sleep(0.01)  # a connect: fork and authentication on the server
        in_flight[0] -= 1
        return FakeConnection()

    pool = make_pool(size=50)

    def use() -> None:
        connection = pool.checkout(slow_connect, timeout=5)
        gevent.sleep(0.02)  # the query
        pool.checkin(connection)

    gevent.joinall([gevent.spawn(use) for _ in range(100)], raise_error=True)
    assert peak[0] == 2
    assert 2 < pool.stats.created < 50
    assert pool.stats.in_use == 0 and pool.stats.waiting == 0


def test_a_failed_open_lets_the_next_waiter_open():
    """When opening fails, the slot and the right to open pass on: no one is stuck."""
    attempts = [0]

    def flaky_connect() -> FakeConnection:
        attempts[0] += 1
        gevent.sleep(0.01)
        if attempts[0] <= 2:
            raise OSError("connection refused")
        return FakeConnection()

    pool = make_pool(size=5)
    calls = [gevent.spawn(pool.checkout, flaky_connect, timeout=2) for _ in range(6)]
    gevent.joinall(calls)
    failed = [c for c in calls if isinstance(c.exception, OSError)]
    assert len(failed) == 2
    assert sum(c.successful() for c in calls) == 4
    assert pool.stats.in_use == 4


def test_oldest_wait_counts_only_while_every_connection_is_in_use():
    """Admission control's pool signal: a line behind busy connections is
    load; a line while connections are free to open (a database that is slow
    to connect, or down) is not."""
    from project.core.pg_pool.handoff import HandOff

    handoff = HandOff(size=2, max_waiting=0, max_opening=1)
    assert handoff.oldest_wait() == 0.0
    handoff._line.join()
    time.sleep(0.02)
    handoff.stats.in_use = 1
    assert handoff.oldest_wait() == 0.0
    handoff.stats.in_use = 2
    assert handoff.oldest_wait() >= 0.02
