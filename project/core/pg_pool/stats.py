"""The counters one pool keeps: gauges, totals and a checkout-wait histogram.

``MeteredPoolStats`` mirrors them into the ``gd_db_pool_*`` Prometheus families.
"""

import functools
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..metrics import (
    DB_POOL_CHECKOUT_WAIT,
    DB_POOL_CONNECTIONS,
    DB_POOL_EVENTS,
    DB_POOL_SIZE,
    DB_POOL_WAITING,
    PendingHistogram,
    enabled,
)

# Milliseconds; the upper bounds of the checkout-wait histogram.
WAIT_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


@dataclass
class PoolStats:
    """Gauges (size, in_use, idle, waiting) and totals for one pool."""

    size: int
    in_use: int = 0
    idle: int = 0
    waiting: int = 0
    checkouts: int = 0
    timeouts: int = 0
    rejected: int = 0
    created: int = 0
    discarded: int = 0
    reclaimed: int = 0
    resets: int = 0
    checks: int = 0
    wait_ms_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(WAIT_BUCKETS_MS) + 1)
    )
    wait_ms_sum: float = 0.0

    def observe_wait(self, ms: float) -> None:
        """Count one checkout that waited ``ms`` milliseconds."""
        self.wait_ms_sum += ms
        for index, bound in enumerate(WAIT_BUCKETS_MS):
            if ms <= bound:
                self.wait_ms_buckets[index] += 1
                return
        self.wait_ms_buckets[-1] += 1


class MeteredPoolStats(PoolStats):
    """``PoolStats`` that also moves the Prometheus pool families as it changes.

    Every change to a pool's counters goes through an attribute assignment
    (``stats.idle = ...``, ``stats.timeouts += 1``), so hooking the assignment
    keeps the gauges current without touching each call site. Gauges move by
    the difference, not to the value: several pools in one worker add up in
    the same (unlabelled by pool) series. The differences and the waits are
    tallied in the worker and written by ``metrics.flush_batched`` (once a
    second, before every exposition, at a worker's exit): a checkout and its
    checkin moved two gauges each and observed a wait, six locked writes to
    the shared files (about 9 us a query).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _METERED_FIELDS:
            # A field's class default (0) before __init__ first sets it.
            delta = value - getattr(self, name, 0)
            if delta:
                with _pending_lock:
                    _pending[name] += delta
        object.__setattr__(self, name, value)

    def observe_wait(self, ms: float) -> None:
        """Count one checkout that waited ``ms`` ms, here and in Prometheus."""
        super().observe_wait(ms)
        with _pending_lock:
            _pending_wait().observe(ms / 1000.0)


# The fields mirrored into a metric (``_metered``'s keys) and the differences
# not written yet, for every pool of this process together.
_METERED_FIELDS = frozenset(
    ("size", "in_use", "idle", "waiting")
    + ("timeouts", "rejected", "created", "discarded", "reclaimed")
)
_pending: defaultdict[str, float] = defaultdict(float)
# Unpatched, pools serve threads (gthread), whose += on one key could race.
_pending_lock = threading.Lock()


@functools.cache
def _pending_wait() -> PendingHistogram:
    return PendingHistogram(DB_POOL_CHECKOUT_WAIT)


def flush_pending() -> None:
    """Write the pools' pending differences and waits (``metrics.flush_batched``)."""
    with _pending_lock:
        deltas = {name: delta for name, delta in _pending.items() if delta}
        _pending.clear()
        waits = _pending_wait()
        for name, delta in deltas.items():
            _metered()[name].inc(delta)
        waits.flush()


metrics.before_exposition(flush_pending)


@functools.cache
def _metered() -> dict[str, Any]:
    """The metric (labelled child) each metered field moves, made once per process."""
    return {
        "size": DB_POOL_SIZE,
        "in_use": DB_POOL_CONNECTIONS.labels(state="in_use"),
        "idle": DB_POOL_CONNECTIONS.labels(state="idle"),
        "waiting": DB_POOL_WAITING,
        "timeouts": DB_POOL_EVENTS.labels(event="timeout"),
        "rejected": DB_POOL_EVENTS.labels(event="refused"),
        "created": DB_POOL_EVENTS.labels(event="created"),
        "discarded": DB_POOL_EVENTS.labels(event="discarded"),
        "reclaimed": DB_POOL_EVENTS.labels(event="reclaimed"),
    }


def new_stats(size: int) -> PoolStats:
    """A pool's counters: metered unless metrics are off (``METRICS_ENABLED``)."""
    return MeteredPoolStats(size=size) if enabled() else PoolStats(size=size)
