"""Single-flight: identical calls in flight share one execution."""

import gevent
import pytest

from project.core.singleflight import SharedCallAbandoned, SingleFlight


def test_concurrent_identical_calls_run_once():
    """Hundred callers of one key: one execution, 99 shared results."""
    flights, calls = SingleFlight(), []

    def work() -> str:
        calls.append(1)
        gevent.sleep(0.05)
        return "value"

    greenlets = [gevent.spawn(flights.do, "k", work, timeout=5) for _ in range(100)]
    gevent.joinall(greenlets)
    results = [g.value for g in greenlets]
    assert len(calls) == 1
    assert results.count(("value", False)) == 1
    assert results.count(("value", True)) == 99
    assert flights.in_flight() == 0
    # Nothing is remembered once the call is over.
    assert flights.do("k", lambda: "again", timeout=1) == ("again", False)


def test_errors_are_shared_and_waiters_time_out_alone():
    """The leader's exception reaches waiters; a short waiter gets TimeoutError."""
    flights = SingleFlight()

    def fail() -> None:
        gevent.sleep(0.05)
        raise ValueError("boom")

    leader = gevent.spawn(flights.do, "k", fail, timeout=5)
    gevent.sleep(0)
    waiter = gevent.spawn(flights.do, "k", fail, timeout=5)
    impatient = gevent.spawn(flights.do, "k", fail, timeout=0.001)
    gevent.joinall([leader, waiter, impatient])
    assert isinstance(leader.exception, ValueError)
    assert waiter.exception is leader.exception
    assert isinstance(impatient.exception, TimeoutError)


def test_a_killed_leader_releases_its_waiters():
    """Killing the leader fails its waiters at once instead of leaving them hanging."""
    flights = SingleFlight()
    leader = gevent.spawn(flights.do, "k", lambda: gevent.sleep(10), timeout=5)
    gevent.sleep(0)
    waiter = gevent.spawn(flights.do, "k", lambda: None, timeout=5)
    gevent.sleep(0)
    leader.kill()
    waiter.join(timeout=1)
    assert isinstance(waiter.exception, SharedCallAbandoned)
    with pytest.raises(KeyError):
        flights._calls["k"]
