"""Per-upstream, per-worker resilience: bulkhead, breaker, retries.

Each piece keeps its state in plain attributes updated between yields to the
gevent hub, so none needs a lock (and none holds one across IO).
``guarded_call`` puts any call through an upstream's bulkhead, breaker and
retry budget (``project.core.outbound.call_upstream`` is an HTTP GET through it).
"""

from .breaker import BreakerConfig, CircuitBreaker, UpstreamBreaker
from .bulkhead import Bulkhead, BulkheadConfig
from .guard import (
    Guarded,
    Guards,
    Outcome,
    Refused,
    guarded_call,
    make_guards,
)
from .retry import RetryBudget, RetryConfig, full_jitter

__all__ = [
    "BreakerConfig",
    "Bulkhead",
    "BulkheadConfig",
    "CircuitBreaker",
    "Guarded",
    "Guards",
    "Outcome",
    "Refused",
    "RetryBudget",
    "RetryConfig",
    "UpstreamBreaker",
    "full_jitter",
    "guarded_call",
    "make_guards",
]
