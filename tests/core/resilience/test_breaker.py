"""The circuit breaker's state machine, on a fake clock (no sleeping)."""

import gevent

from project.core.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    CircuitBreaker,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**overrides) -> tuple[CircuitBreaker, Clock]:
    config = {
        "failure_rate": 0.5,
        "slow_call_rate": 1.0,
        "slow_call_ms": 1000,
        "window": 4,
        "min_calls": 4,
        "open_ms": 500,
        "half_open_probes": 1,
    }
    clock = Clock()
    return CircuitBreaker(BreakerConfig(**{**config, **overrides}), clock=clock), clock


def test_opens_at_the_failure_rate_once_min_calls_are_seen():
    """Two failures in four calls (50%) open it; three calls are not enough."""
    cb, _ = breaker()
    for ok in (True, False, False):
        cb.record(cb.allow(), ok=ok, seconds=0.01)
    assert cb.state == CLOSED
    cb.record(cb.allow(), ok=True, seconds=0.01)
    assert cb.state == OPEN
    assert cb.allow() is None
    assert cb.rejected == 1


def test_slow_calls_open_it():
    """Calls slower than slow_call_ms count toward the slow-call rate."""
    cb, _ = breaker(slow_call_rate=0.75, slow_call_ms=100)
    for seconds in (0.2, 0.2, 0.01, 0.2):
        cb.record(cb.allow(), ok=True, seconds=seconds)
    assert cb.state == OPEN


def test_half_open_probe_success_closes_failure_reopens():
    """After open_ms one probe goes through; others wait; its outcome decides."""
    cb, clock = breaker()
    for _ in range(4):
        cb.record(cb.allow(), ok=False, seconds=0.01)
    assert cb.retry_after() == 0.5
    clock.now += 0.5
    probe = cb.allow()
    assert probe is not None and cb.state == HALF_OPEN
    assert cb.allow() is None  # only one probe at a time
    cb.record(probe, ok=False, seconds=0.01)
    assert cb.state == OPEN
    clock.now += 0.5
    cb.record(cb.allow(), ok=True, seconds=0.01)
    assert cb.state == CLOSED
    assert cb.allow() is not None


def test_outcomes_from_before_a_state_change_are_ignored():
    """A call admitted while closed cannot close or reopen a later state."""
    cb, clock = breaker()
    late = cb.allow()
    for _ in range(4):
        cb.record(cb.allow(), ok=False, seconds=0.01)
    clock.now += 0.5
    probe = cb.allow()
    cb.record(late, ok=True, seconds=0.01)
    assert cb.state == HALF_OPEN
    cb.abandon(probe)  # a killed probe frees its slot
    assert cb.allow() is not None


def test_callers_are_never_serialised():
    """Fifty greenlets are all admitted while each call is in flight (no lock held)."""
    cb, _ = breaker(window=100, min_calls=100)
    in_flight, peak = [0], [0]

    def call() -> None:
        ticket = cb.allow()
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        gevent.sleep(0.01)
        in_flight[0] -= 1
        cb.record(ticket, ok=True, seconds=0.01)

    gevent.joinall([gevent.spawn(call) for _ in range(50)])
    assert peak[0] == 50
