"""The admission gate of this worker: built from settings, metered, logged.

gunicorn's ``post_worker_init`` calls ``install()`` once Django is loaded; the
worker (``project/server/worker.py``) asks ``current()`` for every request.
Nothing imports Django or prometheus_client at module level: gunicorn's
master imports this module with the worker class, before it forks.
"""

import logging
import time
from collections import Counter
from typing import Any

from project.core import loop_turns
from project.core.route_priority import RoutePriorities

from .gate import Gate, GateConfig
from .limit import LimitConfig
from .loop_busy import LoopBusy
from .refusal import Refusals

logger = logging.getLogger("project.admission")

# At most one "shedding" warning per this many seconds.
LOG_INTERVAL_S = 10.0


class WorkerAdmission:
    """The gate plus what the worker needs around it: priorities and canned
    refusals."""

    def __init__(
        self,
        gate: Gate,
        *,
        routes: RoutePriorities,
        refusals: Refusals,
        loop: LoopBusy,
    ) -> None:
        self.gate = gate
        self.routes = routes
        self.refusals = refusals
        # The event loop's watcher: its polls tell a retry at once (worker.py).
        self.loop = loop


class ShedLog:
    """Logs refusals as they happen, at most once per ``LOG_INTERVAL_S``, and
    the end of a shedding episode."""

    def __init__(self) -> None:
        self._logged: Counter[tuple[str, str]] = Counter()
        self._last_log = -LOG_INTERVAL_S
        self._shedding = False

    def on_tick(self, gate: Gate, now: float) -> None:
        """Log what changed since the last line, if it is time."""
        shedding = gate.shedding()
        if not shedding and self._shedding:
            self._flush(gate, now, "stopped shedding")
        elif shedding and now - self._last_log >= LOG_INTERVAL_S:
            self._flush(gate, now, "shedding load")
        self._shedding = shedding

    def _flush(self, gate: Gate, now: float, what: str) -> None:
        new = gate.refused - self._logged
        if not new:
            return
        self._logged = Counter(gate.refused)
        self._last_log = now
        by_reason = Counter[str]()
        for (reason, _priority), count in new.items():
            by_reason[reason] += count
        verdict = gate.verdict
        logger.warning(
            "%s: refused %s request(s) (%s); limit %s, in flight %s, "
            "event loop %.0f%% busy, oldest pool wait %.0f ms",
            what,
            sum(new.values()),
            ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())),
            gate.limit.value,
            gate.in_flight,
            verdict.busy * 100,
            verdict.pool_wait_s * 1000,
        )


class GateMetrics:
    """Moves the ``gd_admission_*`` families once per control interval."""

    def __init__(self) -> None:
        from project.core import metrics

        self.metrics = metrics
        self._counted: Counter[tuple[str, str]] = Counter()
        self._borrowed = 0
        self._deferred = 0

    def on_tick(self, gate: Gate) -> None:
        """Set the gauges; add the refusals since the last tick."""
        m = self.metrics
        m.ADMISSION_LIMIT.set(gate.limit.value)
        m.ADMISSION_IN_FLIGHT.set(gate.in_flight)
        m.ADMISSION_QUEUED.set(gate.queued)
        m.ADMISSION_LOOP_BUSY.set(gate.verdict.busy)
        m.ADMISSION_NEEDED.set(gate.need)
        if gate.borrowed > self._borrowed:
            m.ADMISSION_BORROWED.inc(gate.borrowed - self._borrowed)
            self._borrowed = gate.borrowed
        if gate.deferred > self._deferred:
            m.ADMISSION_DEFERRED.inc(gate.deferred - self._deferred)
            self._deferred = gate.deferred
        new = gate.refused - self._counted
        for (reason, priority), count in new.items():
            m.ADMISSION_SHED.labels(reason=reason, priority=priority).inc(count)
        self._counted.update(new)


_current: WorkerAdmission | None = None
# Retry-After of a refusal, seconds; also the longest a refusal is held back by
# the storm budget.
RETRY_AFTER_S = 1


def current() -> WorkerAdmission | None:
    """This worker's admission control; None when off (or not under gunicorn)."""
    return _current


def config_from_settings(settings: Any, worker_connections: int) -> GateConfig:
    """The gate's configuration: ``SHED_MAX_LIMIT`` (0: ``worker_connections``)
    and ``SHED_QUEUE_TIMEOUT_MS`` from settings, the rest the gate's defaults."""
    maximum = settings.SHED_MAX_LIMIT or worker_connections
    queue_timeout_s = settings.SHED_QUEUE_TIMEOUT_MS / 1000.0
    return GateConfig(
        limit=LimitConfig(minimum=min(LimitConfig.minimum, maximum), maximum=maximum),
        queue_timeout_s=queue_timeout_s,
        queue_target_s=min(GateConfig.queue_target_s, queue_timeout_s),
        defer_s=float(RETRY_AFTER_S),
    )


def after_tick(gate: Gate, shed_log: ShedLog, gate_metrics: GateMetrics | None) -> None:
    """After each control interval: the log, the loop's turns (short while
    shedding, ``loop_turns``) and the metrics."""
    shed_log.on_tick(gate, time.monotonic())
    loop_turns.shorten(gate.shedding())
    if gate_metrics is not None:
        gate_metrics.on_tick(gate)


def install(worker_connections: int) -> WorkerAdmission | None:
    """Build, start and publish this worker's gate (None: ``SHED_ENABLED`` off)."""
    global _current
    from django.conf import settings

    from project.core import metrics
    from project.core.pg_pool.pools import longest_checkout_wait, total_size

    if not settings.SHED_ENABLED:
        return None
    busy = LoopBusy()
    busy.start()
    gate = Gate(
        config_from_settings(settings, worker_connections),
        cpu=busy.sample,
        cpu_or_waiting=lambda: busy.busy_or_waiting,
        pool_wait=longest_checkout_wait,
        pool_size=total_size,
    )
    shed_log = ShedLog()
    gate_metrics = GateMetrics() if metrics.enabled() else None
    gate.start(lambda gate: after_tick(gate, shed_log, gate_metrics))
    _current = WorkerAdmission(
        gate,
        routes=RoutePriorities.parse(settings.SHED_ROUTES),
        refusals=Refusals(RETRY_AFTER_S),
        loop=busy,
    )
    return _current
