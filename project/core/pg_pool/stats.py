"""The counters one pool keeps: gauges, totals and a checkout-wait histogram.

``MeteredPoolStats`` mirrors them into the ``gd_db_pool_*`` Prometheus families.
"""

import bisect
import functools
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..metrics import (
    DB_POOL_CHECKOUT_WAIT,
    DB_POOL_CONNECTIONS,
    DB_POOL_EVENTS,
    DB_POOL_SIZE,
    DB_POOL_WAITING,
    WAIT_BUCKETS,
    enabled,
)

# Milliseconds; the upper bounds of the checkout-wait histogram, the
# Prometheus family's (``gd_db_pool_checkout_wait_seconds``) in milliseconds.
WAIT_BUCKETS_MS = tuple(bound * 1000.0 for bound in WAIT_BUCKETS)


@dataclass(eq=False)  # one pool's, compared by identity (and weakly held)
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
        self.wait_ms_buckets[bisect.bisect_left(WAIT_BUCKETS_MS, ms)] += 1


@dataclass(eq=False)
class MeteredPoolStats(PoolStats):
    """``PoolStats`` whose changes ``flush_pending`` writes to the ``gd_db_pool_*``
    Prometheus families (once a second, before every exposition, at a
    worker's exit: ``metrics.flush_batched``).

    A checkout and its checkin change half a dozen counters; hooking each
    assignment to tally it for Prometheus (under a lock) cost about 1 us an
    assignment, 6 of the 37 us a checkout and checkin took (``python -m
    loadtests.pool_cost``). Here they are plain attributes and the flush
    writes the difference from what it wrote last. Gauges move by that
    difference, not to the value: several pools in one worker add up in the
    same (unlabelled by pool) series. A pool collected between two flushes
    has its last differences written by the next.
    """

    def __post_init__(self) -> None:
        written = _zero_snapshot()
        self._written = written
        _live.add(self)
        # Holds the counters, not the pool's stats: settles them once it is gone.
        weakref.finalize(self, _settle, vars(self), written)


# The fields mirrored into a metric (``_metered``'s keys).
_METERED_FIELDS = (
    *("size", "in_use", "idle", "waiting"),  # gauges
    *("timeouts", "rejected", "created", "discarded", "reclaimed"),  # events
)


def _zero_snapshot() -> dict[str, Any]:
    return {
        **{name: 0 for name in _METERED_FIELDS},
        "wait_ms_buckets": [0] * (len(WAIT_BUCKETS_MS) + 1),
        "wait_ms_sum": 0.0,
    }


_live: "weakref.WeakSet[MeteredPoolStats]" = weakref.WeakSet()
# The differences taken and not written yet.
_settled = _zero_snapshot()
# Unpatched, pools serve threads (gthread): a flush and a finalizer may overlap.
_flush_lock = threading.Lock()


def _take_differences(current: dict[str, Any], written: dict[str, Any]) -> None:
    """Add what changed in ``current`` since ``written`` to ``_settled``; the
    caller holds ``_flush_lock``."""
    totals = _settled
    for name in _METERED_FIELDS:
        value = current[name]
        totals[name] += value - written[name]
        written[name] = value
    buckets, seen = current["wait_ms_buckets"], written["wait_ms_buckets"]
    for index, count in enumerate(buckets):
        totals["wait_ms_buckets"][index] += count - seen[index]
        seen[index] = count
    totals["wait_ms_sum"] += current["wait_ms_sum"] - written["wait_ms_sum"]
    written["wait_ms_sum"] = current["wait_ms_sum"]


def _settle(current: dict[str, Any], written: dict[str, Any]) -> None:
    with _flush_lock:
        _take_differences(current, written)


def flush_pending() -> None:
    """Write the pools' changes since the last flush (``metrics.flush_batched``)."""
    global _settled
    with _flush_lock:
        for stats in list(_live):
            _take_differences(vars(stats), stats._written)
        totals, _settled = _settled, _zero_snapshot()
    metered = _metered()
    for name in _METERED_FIELDS:
        if totals[name]:
            metered[name].inc(totals[name])
    wait = DB_POOL_CHECKOUT_WAIT
    for index, count in enumerate(totals["wait_ms_buckets"]):
        if count:
            wait._buckets[index].inc(count)
    if totals["wait_ms_sum"]:
        wait._sum.inc(totals["wait_ms_sum"] / 1000.0)


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
