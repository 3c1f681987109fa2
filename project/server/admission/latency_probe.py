"""Relearning the unqueued latency while answers queue out of the worker's sight.

While requests queue somewhere the event loop cannot see (a saturated
upstream), the gate holds each route's shortest latency: learned then, it
would include the wait, and the cap would follow the queue up. Held for good,
an upstream that really got slower would be starved: the cap, from the old
latency, admits less than the new one needs, the completion rate falls, and
the cap with it. So every ``PROBE_EVERY_S`` the limit drops to
``PROBE_SHARE`` of the need for ``PROBE_S``, the queue drains, the latencies
are learned afresh, and the limit is given back. This is BBR's ProbeRTT
(every 10 s, 200 ms at 4 packets); Envoy's adaptive concurrency pins its limit
low for its minRTT window the same way.
"""

import math

from .limit import AdaptiveLimit

PROBE_EVERY_S = 10.0
PROBE_S = 0.3
PROBE_SHARE = 0.5


class LatencyProbe:
    """When to probe while queueing lasts, and the cap during a probe."""

    def __init__(self) -> None:
        self._due = 0.0
        self._until = 0.0
        self._limit_before = 0
        self.cap = 0

    def step(
        self, now: float, queueing: bool, need: float, limit: AdaptiveLimit
    ) -> bool:
        """Whether this interval is a probe (then ``cap`` is its limit); a
        probe that ends gives ``limit`` back what it had. ``need`` is the
        need held so far: the probe's own learning moves it."""
        if self._until and (now >= self._until or not queueing):
            self._until = 0.0
            limit.value = max(limit.value, self._limit_before)
        if not queueing:
            self._due = 0.0
            return False
        if not self._due:
            self._due = now + PROBE_EVERY_S
        elif not self._until and now >= self._due:
            self._until = now + PROBE_S
            self._due = self._until + PROBE_EVERY_S
            self._limit_before = limit.value
            self.cap = max(1, math.ceil(PROBE_SHARE * need))
        return bool(self._until)
