"""guarded_call and call_upstream with a bulkhead, breaker and budget of our own."""

import time

import gevent
import pytest

from project.core.deadline import Deadline
from project.core.outbound import call_upstream
from project.core.resilience import (
    BreakerConfig,
    Bulkhead,
    BulkheadConfig,
    Guarded,
    Outcome,
    Refused,
    RetryBudget,
    RetryConfig,
    UpstreamBreaker,
    guarded_call,
)
from project.core.status import Status


class Scripted:
    """A fake upstream: answers from a script of outcomes, records timeouts given."""

    def __init__(self, *outcomes: Outcome[str]) -> None:
        self.outcomes = list(outcomes)
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> Outcome[str]:
        self.timeouts.append(timeout)
        return self.outcomes.pop(0)


FAILED = Outcome("503", healthy=False, retry=True)


def guards(
    *, limit: int = 10, breaker: BreakerConfig | None = None, **retry: float
) -> dict:
    return {
        "bulkhead": Bulkhead(BulkheadConfig(limit=limit)),
        "breaker": UpstreamBreaker(breaker or BreakerConfig()),
        "budget": RetryBudget(RetryConfig(**retry)),
    }


def test_a_full_bulkhead_sheds_without_calling():
    """Every slot taken: Refused (shed) at once, the call never made."""
    state = guards(limit=1)
    state["bulkhead"].try_acquire("")
    upstream = Scripted(Outcome("never"))
    with pytest.raises(Refused) as refused:
        guarded_call(upstream, deadline=Deadline(1), **state)
    assert (refused.value.status, refused.value.attempts) == (Status.SHED, 0)
    assert refused.value.retry_after_s == 1.0
    assert upstream.timeouts == []


def test_an_open_circuit_refuses_and_frees_the_slot():
    """Once failures open the breaker, calls are refused; the bulkhead slot is back."""
    state = guards(breaker=BreakerConfig(window=2, min_calls=2, open_ms=5000))
    upstream = Scripted(FAILED, FAILED, Outcome("never"))
    for _ in range(2):
        assert guarded_call(upstream, deadline=Deadline(1), **state).value == "503"
    with pytest.raises(Refused) as refused:
        guarded_call(upstream, deadline=Deadline(1), **state)
    assert refused.value.status == Status.CIRCUIT_OPEN
    assert 4.9 < refused.value.retry_after_s <= 5.0
    assert state["bulkhead"].in_use == 0
    assert len(upstream.timeouts) == 2


def test_retries_within_the_budget_until_success():
    """Two retriable failures then a success: three attempts, two retries spent."""
    state = guards(retries=3, backoff_ms=1)
    upstream = Scripted(FAILED, FAILED, Outcome("ok"))
    result = guarded_call(upstream, deadline=Deadline(1), **state)
    assert result == Guarded("ok", attempts=3)
    assert state["budget"].retries == 2
    assert state["breaker"].shared.failures == 2


def test_a_spent_budget_refuses_the_retry():
    """No tokens in the budget: the first failure is the answer."""
    state = guards(retries=3, backoff_ms=1, budget_ratio=0.0, budget_reserve=0)
    upstream = Scripted(FAILED, Outcome("never"))
    result = guarded_call(upstream, deadline=Deadline(1), **state)
    assert result == Guarded("503", attempts=1)
    assert state["budget"].refused == 1


def test_the_deadline_bounds_attempts_and_pauses():
    """Attempts get at most what is left less the margin; no pause runs past it."""
    state = guards(retries=3, backoff_ms=1000)
    upstream = Scripted(FAILED, Outcome("never"))
    started = time.monotonic()
    result = guarded_call(
        upstream,
        deadline=Deadline(0.2),
        timeout_s=5.0,
        margin_s=0.05,
        rng=lambda: 1.0,
        **state,
    )
    assert time.monotonic() - started < 0.1
    assert result.attempts == 1
    assert 0.1 < upstream.timeouts[0] <= 0.15
    with pytest.raises(Refused) as refused:
        guarded_call(upstream, deadline=Deadline(0), **state)
    assert refused.value.status == Status.TIMEOUT


def test_a_timeout_around_the_call_is_a_failure_and_propagates():
    """A gevent.Timeout from outside counts as a failure and reaches its owner."""
    state = guards()

    def slow(timeout: float) -> Outcome[str]:
        gevent.sleep(1)
        return Outcome("late")

    with pytest.raises(gevent.Timeout), gevent.Timeout(0.02):
        guarded_call(slow, deadline=Deadline(1), **state)
    assert state["breaker"].shared.failures == 1
    assert state["bulkhead"].in_use == 0


def test_call_upstream_retries_503_and_parses_a_good_answer(upstream):
    """Against the stub: 503s are retried (then an error); a 200 is parsed."""
    state = guards(retries=2, backoff_ms=1)
    failed = call_upstream(
        f"{upstream}/status?code=503",
        parse=lambda response: response.json(),
        deadline=Deadline(2),
        **state,
    )
    assert (failed.status, failed.attempts) == (Status.ERROR, 3)
    assert failed.error == "upstream answered 503"
    answered = call_upstream(
        f"{upstream}/delay?ms=1",
        parse=lambda response: response.json(),
        deadline=Deadline(2),
        **state,
    )
    assert (answered.status, answered.attempts) == (Status.OK, 1)
    assert answered.value["slept_ms"] == 1
