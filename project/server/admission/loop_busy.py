"""How busy the worker's event loop is: the share of time it spends not polling.

A gevent worker has one core's worth of CPU for every request it holds. When
the loop never waits in its poll, every ready greenlet is queued behind the
others and latency grows with each request added; that is the CPU's
congestion signal. libev calls a ``prepare`` watcher just before the loop
polls and a ``check`` watcher just after, so the time between them is the
time the loop had nothing to run. Unlike the process's CPU time, this also
counts time the worker was runnable but not scheduled (a busy neighbour on
the same core): capacity lost either way.

Not all of it, though: a poll whose sockets became ready while the CPU was
taken ends only when the kernel runs the worker again, and that wait looks
like idle time. The kernel counts it (``/proc/<tid>/schedstat``, the second
field: nanoseconds runnable but waiting for a CPU, what PSI's ``cpu some``
sums over tasks), so ``busy_or_waiting`` also takes it off the idle time.
Two W1 workers at 3x their knee, sharing two cores with the stub upstream and
h2load, ran 55-60 % of a core each and waited 15-25 % for one: ``sample``
read 0.63-0.85, ``busy_or_waiting`` 0.9 and more. The gate reads the second
only while new work piles up (congestion.py says why).
"""

import os
import time
from typing import Any

import gevent

from project.core.schedstat import read_ns, thread_path

# libev's EV_MINPRI and EV_MAXPRI.
LOWEST_PRIORITY = -2
HIGHEST_PRIORITY = 2


class LoopBusy:
    """Busy fraction of the current event loop between two ``sample()`` calls."""

    def __init__(self, schedstat: str | None = None) -> None:
        """``schedstat``: the file to read run-queue waits from; by default the
        ``start()``ing thread's (none where the kernel has none)."""
        self._schedstat = schedstat
        self._run_queue = 0.0
        # What the last sample() read with the waits for a CPU counted busy.
        self.busy_or_waiting = 0.0
        self._idle = 0.0
        self._polling_since = 0.0
        self._since = time.perf_counter()
        self._watchers: list[Any] = []
        # Polls completed, how long the latest one waited and when the one
        # before it ended (perf_counter): when the request read after a
        # refusal was there (``refusal_budget.came_back_at_once``).
        self.polls = 0
        self.last_wait_s = 0.0
        self.polled_before = self._polled_at = 0.0
        # The loop iteration under way when start() ran has queued its prepare
        # watchers already: nothing is known until ours has fired once.
        self._primed = False

    def start(self) -> None:
        """Watch the loop of the calling thread's hub (from its next iteration)."""
        if self._watchers:
            return
        loop = gevent.get_hub().loop
        # Lowest priority: gevent runs its callback queue (spawned and woken
        # greenlets) in a prepare watcher of its own; ours must fire after
        # it, or that work would count as idle. Highest for the check: libev
        # runs it among the IO and timer watchers that became ready, by
        # priority, and it must come before any of them.
        before = loop.prepare(priority=LOWEST_PRIORITY)
        after = loop.check(priority=HIGHEST_PRIORITY)
        before.start(self._before_poll)
        after.start(self._after_poll)
        self._watchers = [before, after]
        if self._schedstat is None:
            path = thread_path()
            self._schedstat = path if os.path.exists(path) else None
        if self._schedstat is not None:
            self._run_queue = self._run_queue_s(self._schedstat)
        self._since = time.perf_counter()

    def stop(self) -> None:
        """Stop watching."""
        for watcher in self._watchers:
            watcher.stop()
            watcher.close()
        self._watchers = []

    def _before_poll(self) -> None:
        self._polling_since = time.perf_counter()
        self._primed = True

    def _after_poll(self) -> None:
        now = time.perf_counter()
        self.polls += 1
        self.polled_before, self._polled_at = self._polled_at, now
        if self._polling_since:
            waited = self.last_wait_s = now - self._polling_since
            self._idle += waited
            self._polling_since = 0.0

    @staticmethod
    def _run_queue_s(path: str) -> float:
        # Seconds the thread has waited runnable for a CPU (0 if unreadable).
        times = read_ns(path)
        return times[1] / 1e9 if times is not None else 0.0

    def sample(self) -> float:
        """The busy fraction (0 to 1) since the previous sample."""
        now = time.perf_counter()
        wall = now - self._since
        # Greenlets run after the check watcher, so no poll is under way here.
        idle, self._idle = self._idle, 0.0
        self._since = now
        # Waits for a CPU while greenlets ran are busy time already; only
        # those inside a poll were counted idle. Which is which is not known,
        # so all of it comes off the idle time: at worst a worker whose
        # neighbours take its CPU reads busier than it is.
        waited = 0.0
        if self._schedstat is not None:
            run_queue = self._run_queue_s(self._schedstat)
            waited, self._run_queue = run_queue - self._run_queue, run_queue
        if wall <= 0.0 or not self._primed:
            self.busy_or_waiting = 0.0
            return 0.0
        self.busy_or_waiting = min(1.0, max(0.0, 1.0 - max(0.0, idle - waited) / wall))
        return min(1.0, max(0.0, 1.0 - idle / wall))
