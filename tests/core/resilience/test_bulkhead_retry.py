"""Bulkhead, full-jitter backoff and the retry budget."""

from project.core.resilience.bulkhead import Bulkhead, BulkheadConfig
from project.core.resilience.retry import RetryBudget, RetryConfig, full_jitter


def test_bulkhead_sheds_beyond_its_limit():
    """Two slots: the third caller is refused and counted; a release frees one."""
    bulkhead = Bulkhead(BulkheadConfig(limit=2))
    assert [bulkhead.try_acquire("a") for _ in range(3)] == [True, True, False]
    assert bulkhead.shed == 1
    bulkhead.release("a")
    assert bulkhead.try_acquire("a")


def test_full_jitter_is_uniform_up_to_the_capped_exponential():
    """Retry n waits U(0, min(cap, base * 2^(n-1)))."""
    assert full_jitter(1, base_s=0.1, cap_s=1, rng=lambda: 1.0) == 0.1
    assert full_jitter(3, base_s=0.1, cap_s=1, rng=lambda: 0.5) == 0.2
    assert full_jitter(10, base_s=0.1, cap_s=1, rng=lambda: 1.0) == 1
    assert full_jitter(2, base_s=0.1, cap_s=1, rng=lambda: 0.0) == 0


def test_retry_budget_allows_reserve_plus_ratio_of_calls():
    """With ratio 0.1 and reserve 5, 100 calls allow 5 + 10 retries, no more."""
    budget = RetryBudget(RetryConfig(budget_ratio=0.1, budget_reserve=5))
    allowed = 0
    for _ in range(100):
        budget.on_call()
        while budget.try_retry():
            allowed += 1
    assert 14 <= allowed <= 15
    assert budget.refused >= 100


def test_retry_budget_does_not_bank_a_storm():
    """A long healthy spell leaves at most the reserve in the bucket."""
    budget = RetryBudget(RetryConfig(budget_ratio=0.5, budget_reserve=3))
    for _ in range(1000):
        budget.on_call()
    assert sum(budget.try_retry() for _ in range(10)) == 3
