"""Per-upstream, per-worker resilience: bulkhead, breaker, retries, single-flight.

Each piece keeps its state in plain attributes updated between yields to the
gevent hub, so none needs a lock (and none holds one across IO).
"""
