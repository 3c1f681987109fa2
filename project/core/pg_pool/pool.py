"""A bounded, fair psycopg2 connection pool for gevent (or threads), one per worker.

What it takes from psycopg_pool (psycopg 3) and HikariCP, one module per job:

* **Hand-off, first come first served**, bounded waits and a bounded queue
  (``handoff``, ``waiting``: psycopg_pool's ``_waiting`` deque of
  ``WaitingClient``, HikariCP's hand-off queue);
* **growth a few connections at a time** and shrinking to what a full server
  allows (``capacity``);
* **cheap liveness** checks before reuse and the reset after use
  (``health``);
* **leak detection** (``leaks``: HikariCP's ``leakDetectionThreshold``);
* **lifecycle**: ``max_lifetime`` with jitter, ``max_idle`` above ``min_idle``
  (``idle``, ``maintenance``);
* counters (``stats``) and refusals (``errors``).

``ConnectionPool`` ties them to connections: it opens, checks, hands out and
takes back. Failures after a slot is taken always give the slot back.
"""

import time
from collections.abc import Callable
from typing import Any

from .capacity import size_from
from .entry import Entry, close_quietly
from .errors import too_many_clients
from .handoff import Grant, HandOff
from .health import Health
from .leaks import SCAN_INTERVAL_S, Checkouts


class ConnectionPool(HandOff):
    """At most ``size`` connections handed out fairly; see the module docstring.

    ``size`` may be left ``None`` and ``sizer`` given: the first connection
    opened is passed to ``sizer``, which returns the size (e.g. from the
    database's connection budget).
    """

    def __init__(
        self,
        *,
        size: int | None,
        sizer: Callable[[Any], int] | None = None,
        max_waiting: int = 0,
        check_idle_after: float = 30.0,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        min_idle: int = 0,
        max_opening: int = 2,
        reset: Callable[[Any], bool],
        check: Callable[[Any], bool],
        readable: Callable[[Any], bool],
    ) -> None:
        if size is None and sizer is None:
            raise ValueError("give size or sizer")
        super().__init__(size=size, max_waiting=max_waiting, max_opening=max_opening)
        self._sizer = sizer
        self.check_idle_after = check_idle_after
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.min_idle = min_idle
        self._health = Health(
            check=check, readable=readable, reset=reset, stats=self.stats
        )
        self._checkouts = Checkouts(self._lock, self.stats)

    def checkout(self, connect: Callable[[], Any], *, timeout: float) -> Any:
        """Return a healthy connection, waiting at most ``timeout`` seconds in line.

        ``connect`` opens a new connection when no idle one can be reused.
        Raises ``PoolTimeout`` when the wait runs out and ``PoolFull`` when the
        queue is already ``max_waiting`` long.
        """
        started = time.monotonic()
        while True:
            entry, may_open = self._acquire(
                timeout - (time.monotonic() - started), started
            )
            try:
                connection = self._ready(entry, may_open, connect)
                break
            except Exception as exc:
                if not (too_many_clients(exc) and self._shrink()):
                    self._free_slot()
                    raise
                # The server is full (other clients took our budget): wait in
                # line for one of the connections we already have.
            except BaseException:
                self._free_slot()
                raise
        self.stats.observe_wait((time.monotonic() - started) * 1000.0)
        return connection

    def checkin(self, connection: Any, *, discard: bool = False) -> None:
        """Give a connection back: reset for reuse, or closed (discard/unusable)."""
        entry = self._checkouts.remove(connection)
        if entry is None:
            # Reclaimed from a gone owner already, or never ours: just close it.
            close_quietly(connection)
            return
        keep = False
        try:
            if not discard and time.monotonic() < entry.expires:
                keep = self._health.reset_for_reuse(connection)
        finally:
            if keep:
                self._give_back(entry)
            else:
                self._close_entry(entry)

    def close_idle(self) -> int:
        """Close every idle connection (e.g. before dropping the database)."""
        with self._lock:
            idle = self._idle.drain()
        for entry in idle:
            self._close_entry(entry)
        return len(idle)

    def maintain(self) -> None:
        """Close idle connections past ``max_idle``/``max_lifetime``; reclaim leaks."""
        now = time.monotonic()
        with self._lock:
            doomed = self._idle.expire(
                now, max_idle=self.max_idle, min_idle=self.min_idle
            )
        for entry in doomed:
            self._close_entry(entry)
        self._reclaim_leaks(force=True)
        self._try_full_size()

    def _acquire(self, timeout: float, started: float) -> Grant:
        if self._checkouts.scan_due(started):
            self._reclaim_leaks()
        grant = self._take_now()
        if grant is not None:
            return grant
        # The pool is dry: a gone owner's connection may be what we wait for.
        self._reclaim_leaks()
        return self._take_or_wait(
            timeout, started, self._reclaim_leaks, SCAN_INTERVAL_S
        )

    def _ready(
        self, entry: Entry | None, may_open: bool, connect: Callable[[], Any]
    ) -> Any:
        """The connection of ``entry`` if still usable, else a new one."""
        if entry is not None and not self._health.usable(entry, self.check_idle_after):
            self._retire(entry)
            entry = None
        if entry is None:
            if not may_open:  # its connection was dead: open anew in its place
                self._reopening()
            try:
                entry = self._open_entry(connect)
            finally:
                self._opened()
        self._checkouts.add(entry)
        return entry.connection

    def _open_entry(self, connect: Callable[[], Any]) -> Entry:
        connection = connect()
        self.stats.created += 1
        if self._sizer is not None:
            sizer, self._sizer = self._sizer, None
            self._resize(size_from(sizer, connection))
        return Entry.new(connection, self.max_lifetime)

    def _reclaim_leaks(self, force: bool = False) -> None:
        for entry in self._checkouts.reclaim(force):
            # Its owner may have left it mid-transaction: never hand it on.
            self._close_entry(entry)

    def _close_entry(self, entry: Entry) -> None:
        self._retire(entry)
        self._free_slot()

    def _retire(self, entry: Entry) -> None:
        self.stats.discarded += 1
        close_quietly(entry.connection)
