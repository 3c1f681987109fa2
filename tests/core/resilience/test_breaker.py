"""The circuit breaker's state machine and its sharing out by client, on a
fake clock (no sleeping)."""

import gevent

from project.core.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    CircuitBreaker,
    UpstreamBreaker,
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


def upstream_breaker(**overrides) -> tuple[UpstreamBreaker, Clock]:
    config = {"window": 10, "min_calls": 4, "slow_call_ms": 100, "open_ms": 500}
    clock = Clock()
    return UpstreamBreaker(BreakerConfig(**{**config, **overrides}), clock=clock), clock


def call(cb: UpstreamBreaker, client: str, *, ok: bool = True, seconds=0.01) -> bool:
    """One call for ``client`` if admitted (True), its outcome recorded."""
    ticket = cb.allow(client)
    if ticket is None:
        return False
    cb.record(ticket, ok=ok, seconds=seconds)
    return True


def test_one_client_s_slow_calls_open_its_own_breaker_only():
    """Slow calls a client chose (its own parameters) stop that client; the
    upstream's breaker stays closed and others' calls go through."""
    cb, _ = upstream_breaker(slow_call_rate=0.8)
    for _ in range(10):
        call(cb, "attacker", seconds=5.0)
        call(cb, "victim")
    assert cb.state_for("attacker") == OPEN
    assert not call(cb, "attacker")
    assert cb.retry_after("attacker") == 0.5
    assert cb.state == CLOSED and cb.state_for("victim") == CLOSED
    assert call(cb, "victim")


def test_one_client_s_failures_open_its_own_breaker_only():
    """A client whose calls fail (a 5xx its parameters provoke) stops itself."""
    cb, _ = upstream_breaker()
    for _ in range(6):
        call(cb, "bad", ok=False)
    call(cb, "good")
    assert (cb.state_for("bad"), cb.state, cb.state_for("good")) == (
        OPEN,
        CLOSED,
        CLOSED,
    )
    assert call(cb, "good") and not call(cb, "bad")


def test_failures_seen_by_several_clients_open_it_for_everyone():
    """An upstream failing everyone: once the others' calls fail too, the
    shared breaker opens, and a newcomer is refused on its first call."""
    cb, clock = upstream_breaker()
    for client in ("a", "b", "c") * 3:
        call(cb, client, ok=False)
    assert cb.state == OPEN
    assert not call(cb, "newcomer")
    assert cb.retry_after("newcomer") == 0.5
    clock.now += 0.5
    assert call(cb, "newcomer")  # the shared probe, with the newcomer's own breaker
    assert cb.state == CLOSED


def test_the_shared_breaker_opens_only_without_its_worst_client():
    """Rates reached over the whole window are not enough: without the worst
    client the rest must reach them too, over at least min_calls."""
    shared = CircuitBreaker(
        BreakerConfig(window=10, min_calls=4, failure_rate=0.5),
        spare_worst_client=True,
    )
    for _ in range(6):
        shared.record(shared.allow(), ok=False, seconds=0.01, client="worst")
    for ok in (True, False, True):
        shared.record(shared.allow(), ok=ok, seconds=0.01, client="other")
    assert shared.state == CLOSED  # the others: 1 failure in 3 calls
    shared.record(shared.allow(), ok=False, seconds=0.01, client="third")
    assert shared.state == OPEN  # the others: 2 failures in 4 calls


def test_a_timeout_counts_against_the_client_and_the_upstream():
    """A failed call (a timeout is one) is in both windows."""
    cb, _ = upstream_breaker()
    call(cb, "a", ok=False, seconds=1.0)
    assert cb.clients["a"].failures == 1 and cb.shared.failures == 1
    assert cb.shared.window[-1] == ("a", True, True)


def test_a_client_refused_by_its_own_breaker_spends_no_shared_probe():
    """The shared breaker is due for its half-open probe; a client whose own
    breaker is open is refused without taking it, and the next client probes."""
    cb, clock = upstream_breaker()
    for client in "abcdef":
        call(cb, client, ok=False)
    assert cb.state == OPEN
    clock.now += 0.5
    own = cb.clients["a"]
    for _ in range(4):
        own.record(own.allow(), ok=False, seconds=0.01)
    assert not call(cb, "a")
    assert call(cb, "d")
    assert cb.state == CLOSED
