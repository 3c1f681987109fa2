"""The event loop's health, per worker: lag, blocking episodes, greenlets.

A greenlet wakes every ``PERIOD_S`` and records how late the timer fired: the
time the loop spent on other work meanwhile (``gd_event_loop_lag_seconds``).
gevent's monitor thread reports greenlets that hold the loop longer than
``MAX_BLOCKING_TIME_S`` (``blocking.py``). Started by gunicorn's
``post_worker_init`` hook (``workers.py``), never in the master.
"""

import logging
import time

import gevent
import zope.event

from project.core import fanout, metrics
from project.server import worker as gunicorn_worker

from .blocking import BlockedLoopLog

logger = logging.getLogger(__name__)

PERIOD_S = 0.1
# The greenlet estimate is refreshed, and batched samples are written
# (metrics.flush_batched), once per this many periods.
GREENLETS_EVERY = 10


def greenlets_estimate() -> int:
    """Requests being served (the server pool's greenlets) + fan_out legs running.

    Not every greenlet (the loop's own, watchers, single-flight leaders are
    left out): a full count would walk ``gc.get_objects()`` on the loop and
    hold it.
    """
    return gunicorn_worker.busy_connections() + fanout.legs_in_flight()


class LoopMonitor:
    """The lag timer greenlet and the blocked-loop subscriber of one process."""

    def __init__(self, max_blocking_time: float, period: float = PERIOD_S) -> None:
        self.max_blocking_time = max_blocking_time
        self.period = period
        self.blocked = BlockedLoopLog()
        self.greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """Start the lag greenlet and, unless the threshold is 0, the monitor thread."""
        if self.greenlet is not None:
            return
        if self.max_blocking_time > 0:
            gevent.config.max_blocking_time = self.max_blocking_time
            gevent.config.monitor_thread = True
            # We log the stack ourselves, once per site; gevent would print
            # every episode to stderr.
            gevent.config.print_blocking_reports = False
            zope.event.subscribers.append(self.blocked.on_event)
            gevent.get_hub().start_periodic_monitoring_thread()
        self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the greenlet and the monitor thread (tests; a worker just exits)."""
        if self.greenlet is not None:
            self.greenlet.kill()
            self.greenlet = None
        if self.blocked.on_event in zope.event.subscribers:
            zope.event.subscribers.remove(self.blocked.on_event)
            hub = gevent.get_hub()
            if hub.periodic_monitoring_thread is not None:
                hub.periodic_monitoring_thread.kill()
                hub.periodic_monitoring_thread = None
            gevent.config.monitor_thread = False

    def _run(self) -> None:
        ticks = 0
        while True:
            started = time.perf_counter()
            gevent.sleep(self.period)
            metrics.LOOP_LAG.observe(
                max(0.0, time.perf_counter() - started - self.period)
            )
            self.blocked.drain()
            if ticks % GREENLETS_EVERY == 0:
                metrics.GREENLETS.set(greenlets_estimate())
                metrics.flush_batched()
            ticks += 1


_monitor: LoopMonitor | None = None
# gevent's monitor thread reports a greenlet holding the loop this long.
MAX_BLOCKING_TIME_S = 0.1


def start() -> LoopMonitor | None:
    """Start this process's monitor once; None when ``METRICS_ENABLED`` is false."""
    global _monitor
    if not metrics.enabled():
        return None
    if _monitor is None:
        _monitor = LoopMonitor(MAX_BLOCKING_TIME_S)
        _monitor.start()
        logger.debug("event-loop monitor started")
    return _monitor
