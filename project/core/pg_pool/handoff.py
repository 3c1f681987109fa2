"""Slots for connections, handed out first come, first served.

A freed connection goes straight to the longest waiter, never onto the idle
stack while someone waits, so a newcomer cannot barge past those queued
before it (a semaphore lets it). This is psycopg_pool's hand-off (its
``_waiting`` deque, served from ``_return_connection``) and HikariCP's
hand-off queue. A waiter is granted either an idle connection or the right
to open one; as in psycopg_pool a waiting client makes the pool grow, here
by at most ``max_opening`` connections being opened at once.

Waits are bounded (the caller's ``timeout``) and so is the line
(``max_waiting``: beyond it, ``PoolFull`` at once).
"""

import threading
import time
from collections.abc import Callable

from .capacity import Capacity
from .entry import Entry
from .errors import PoolTimeout, refusal
from .idle import IdleStack
from .log import logger
from .stats import new_stats
from .waiting import Waiter, WaitingLine

# An idle entry to reuse, or None with the right to open a connection.
Grant = tuple[Entry | None, bool]


class HandOff:
    """Idle entries and the right to open new ones, longest waiter first.

    Knows entries, not their connections: ``ConnectionPool`` builds on it.
    """

    def __init__(self, *, size: int | None, max_waiting: int, max_opening: int) -> None:
        # A greenlet lock once patched; never held across IO.
        self._lock = threading.Lock()
        self.stats = new_stats(size or 0)
        self._idle = IdleStack(self.stats)
        self._line = WaitingLine(self.stats)
        self._capacity = Capacity(size, self.stats)
        self.max_waiting = max_waiting
        self.max_opening = max_opening

    @property
    def size(self) -> int:
        """The most connections this pool opens (0 until sized)."""
        return self.stats.size

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting checkout has waited so far, counted only
        while every connection is in use (0: none waits, or the line waits on
        a slow or lost database rather than on checkouts: admission control
        must not shrink the service for that)."""
        if self.stats.in_use < self.stats.size:
            return 0.0
        return self._line.oldest_wait()

    def _take_now(self) -> Grant | None:
        """An idle entry or the right to open, if nobody waits and one is free."""
        with self._lock:
            return self._take()

    def _take(self) -> Grant | None:
        """``_take_now`` with the lock held."""
        if len(self._line):
            return None
        if self._idle:
            return self._idle.pop(), False
        if self._capacity.take_opening(self.max_opening):
            return None, True
        return None

    def _take_or_wait(
        self, timeout: float, started: float, tick: Callable[[], None], every: float
    ) -> Grant:
        """``_take_now``, else wait in line until ``started + timeout``, running
        ``tick`` every ``every`` seconds meanwhile."""
        with self._lock:
            grant = self._take()
            if grant is not None:
                return grant
            full = bool(self.max_waiting and len(self._line) >= self.max_waiting)
            if timeout <= 0 or full:
                if timeout > 0:
                    self.stats.rejected += 1
                else:
                    self.stats.timeouts += 1
                raise self._refusal(timeout > 0, timeout)
            waiter = self._line.join()
            # Someone waits: grow (the longest waiter opens) if allowed.
            self._grow_for_waiters()
        try:
            waiter.wait(started + timeout, tick, every)
        except BaseException:
            # Killed or interrupted while queued: pass on whatever we were given.
            self._withdraw(waiter)
            raise
        with self._lock:
            if not waiter.granted:
                self._line.leave(waiter)
                self.stats.timeouts += 1
                raise self._refusal(False, timeout)
        return waiter.entry, waiter.may_open

    def _withdraw(self, waiter: Waiter) -> None:
        with self._lock:
            if not waiter.granted:
                self._line.leave(waiter)
                return
        if waiter.entry is not None:
            self._give_back(waiter.entry)
        else:
            self._opened()
            self._free_slot()

    def _refusal(self, full: bool, timeout: float) -> PoolTimeout:
        waiting, size = len(self._line), self.size
        return refusal(full=full, timeout=timeout, waiting=waiting, size=size)

    def _give_back(self, entry: Entry) -> None:
        """Hand an idle entry to the longest waiter, or onto the idle stack."""
        entry.owner = None
        entry.idle_since = time.monotonic()
        with self._lock:
            if len(self._line):
                self._line.grant(entry=entry)
            else:
                self._idle.push(entry)

    def _reopening(self) -> None:
        """A dead idle connection is replaced: its slot is being opened again."""
        with self._lock:
            self._capacity.reopening()

    def _opened(self) -> None:
        """An open finished (or was given up): let the next waiter open one."""
        with self._lock:
            self._capacity.opened()
            self._grow_for_waiters()

    def _free_slot(self) -> None:
        """A connection is gone: its slot may be opened anew."""
        with self._lock:
            self._capacity.free()
            self._grow_for_waiters()

    def _resize(self, size: int) -> None:
        with self._lock:
            self._capacity.resize(size)
            self._grow_for_waiters()

    def _shrink(self) -> bool:
        """Give up the slot being opened; cap the size at what is open."""
        with self._lock:
            first = not self._capacity.shrunk
            if not self._capacity.shrink():
                return False
        if first:
            logger.warning(
                "PostgreSQL refused a new connection (too many clients); this pool "
                "works with the %d it has until maintenance tries to grow it again",
                self.size,
            )
        return True

    def _try_full_size(self) -> None:
        """After a full server shrank the pool, try the configured size again."""
        configured = self._capacity.configured
        if configured and self._capacity.size < configured:
            self._resize(configured)

    def _grow_for_waiters(self) -> None:
        """Grant queued checkouts the right to open, while allowed (lock held)."""
        while len(self._line) and self._capacity.take_opening(self.max_opening):
            self._line.grant(may_open=True)
