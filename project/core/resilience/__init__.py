"""Per-upstream, per-worker resilience: bulkhead, breaker, retries, single-flight.

Each piece keeps its state in plain attributes updated between yields to the
gevent hub, so none needs a lock (and none holds one across IO).
``guarded_call`` (any call) and ``call_upstream`` (an HTTP GET) put a call
through an upstream's bulkhead, breaker and retry budget.
"""

from .breaker import BreakerConfig, CircuitBreaker, UpstreamBreaker
from .bulkhead import Bulkhead, BulkheadConfig
from .guard import (
    Guarded,
    Guards,
    Outcome,
    Refused,
    UpstreamResult,
    call_upstream,
    guarded_call,
    make_guards,
)
from .retry import RetryBudget, RetryConfig, full_jitter
from .singleflight import SharedCallAbandoned, SingleFlight

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
    "SharedCallAbandoned",
    "SingleFlight",
    "UpstreamBreaker",
    "UpstreamResult",
    "call_upstream",
    "full_jitter",
    "guarded_call",
    "make_guards",
]
