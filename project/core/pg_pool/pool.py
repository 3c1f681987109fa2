"""A bounded, fair psycopg2 connection pool for gevent (or threads), one per worker.

What it takes from psycopg_pool (psycopg 3) and HikariCP:

* **Hand-off, first come first served** (psycopg_pool's ``_waiting`` deque,
  HikariCP's hand-off queue): a connection given back goes straight to the
  longest waiter, never onto the idle stack while someone waits, so a newcomer
  cannot barge past those queued before it (a semaphore lets it).
* **Bounded waits and a bounded queue** (``timeout``, ``max_waiting``): a
  checkout waits at most the time its caller has, and a queue already
  ``max_waiting`` long refuses at once (``PoolFull``).
* **Leak detection** (HikariCP's ``leakDetectionThreshold``): each checkout
  records its owner (the greenlet or thread) and where it was made; a
  connection whose owner ended without giving it back is reclaimed and the
  site logged once. Checked when the pool runs dry and by the maintenance task.
* **Growth a few connections at a time** (psycopg_pool grows by one
  connection while clients wait, HikariCP through a single-threaded
  add-connection executor): at most ``max_opening`` connections are being
  opened at once; everyone else queues for a connection given back or the
  next open. A burst of 200 requests then grows the pool to what the load
  needs instead of 200 backends forked at once, a storm that made every
  request of the burst wait for PostgreSQL's fork and authentication.
* **Lifecycle** (``max_lifetime`` with jitter, ``max_idle`` above
  ``min_idle``): as in both, never closing a connection that is in use.
* **Cheap liveness**: reuse is most-recently-used first with no round trip
  unless the socket has something to say (a dead server's goodbye makes it
  readable), the connection sat idle past ``check_idle_after``, or another
  connection was found broken since it went idle (then all older ones are
  suspect: HikariCP's "evict on broken" and psycopg_pool's ``check``).

Failures after a slot is taken always give the slot back.
"""

import logging
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import greenlet
import psycopg2

logger = logging.getLogger(__name__)

# Milliseconds; the upper bounds of the checkout-wait histogram.
WAIT_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
# How often a waiting checkout wakes to look for leaked connections.
_LEAK_SCAN_INTERVAL_S = 1.0
_LIFETIME_JITTER = 0.05  # up to 5 % earlier, so connections do not all expire at once


class PoolTimeout(psycopg2.OperationalError):
    """No connection became free in the time the caller had.

    A psycopg2 ``OperationalError`` so that Django wraps it like any other
    failure to connect (``django.db.OperationalError``).
    """


class PoolFull(PoolTimeout):
    """The queue of waiting checkouts is already ``max_waiting`` long."""


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

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as a dict (for logs and metrics)."""
        return asdict(self)


@dataclass(eq=False)
class _Entry:
    """One open connection and what the pool knows of it."""

    connection: Any
    expires: float
    idle_since: float = 0.0
    owner: Any = None  # weakref to the greenlet holding it
    site: str = ""


@dataclass(eq=False)
class _Waiter:
    """A queued checkout: granted either an entry or the right to open one."""

    event: Any
    entry: _Entry | None = None
    may_open: bool = False

    @property
    def granted(self) -> bool:
        return self.entry is not None or self.may_open


class ConnectionPool:
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
        self._lock = (
            threading.Lock()
        )  # a greenlet lock once patched; never held across IO
        self._idle: deque[_Entry] = deque()
        self._out: dict[int, _Entry] = {}
        self._waiters: deque[_Waiter] = deque()
        self._open = 0  # connections open or being opened: idle + out + opening
        self._opening = 0  # connections being opened right now
        self.max_opening = max_opening
        self._sizer = sizer
        self._size = size if size is not None else 1  # one opener until sized
        self._configured_size = size
        self._suspect_before = 0.0
        self._next_leak_scan = 0.0
        self._leak_sites: set[str] = set()
        self.max_waiting = max_waiting
        self.check_idle_after = check_idle_after
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.min_idle = min_idle
        self._reset = reset
        self._check = check
        self._readable = readable
        self.stats = PoolStats(size=size or 0)

    @property
    def size(self) -> int:
        """The most connections this pool opens (0 until sized)."""
        return self.stats.size

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
                if not (_too_many_clients(exc) and self._shrink()):
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
        with self._lock:
            entry = self._out.pop(id(connection), None)
            if entry is not None:
                self.stats.in_use -= 1
        if entry is None:
            # Reclaimed from a gone owner already, or never ours: just close it.
            _close(connection)
            return
        keep = False
        try:
            if not discard and time.monotonic() < entry.expires:
                keep = self._reset_for_reuse(connection)
        finally:
            if keep:
                self._give_back(entry)
            else:
                self._close_entry(entry)

    def close_idle(self) -> int:
        """Close every idle connection (e.g. before dropping the database)."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
            self.stats.idle = 0
        for entry in idle:
            self._close_entry(entry)
        return len(idle)

    def maintain(self) -> None:
        """Close idle connections past ``max_idle``/``max_lifetime``; reclaim leaks."""
        now = time.monotonic()
        doomed = []
        with self._lock:
            keep = deque()
            for entry in self._idle:  # oldest first
                expired = now >= entry.expires
                too_long = now - entry.idle_since > self.max_idle
                if expired or (
                    too_long and len(self._idle) - len(doomed) > self.min_idle
                ):
                    doomed.append(entry)
                else:
                    keep.append(entry)
            self._idle = keep
            self.stats.idle = len(keep)
        for entry in doomed:
            self._close_entry(entry)
        self._reclaim_leaks(force=True)
        if self._configured_size and self._size < self._configured_size:
            self._resize(self._configured_size)  # shrunk by a full server: try again

    # Acquiring a slot

    def _acquire(self, timeout: float, started: float) -> tuple[_Entry | None, bool]:
        if started >= self._next_leak_scan:
            self._reclaim_leaks()
        with self._lock:
            if not self._waiters:
                if self._idle:
                    entry = (
                        self._idle.pop()
                    )  # most recently used: warm, least likely dead
                    self.stats.idle = len(self._idle)
                    return entry, False
                if self._may_open():
                    return None, True
        # The pool is dry: a gone owner's connection may be what we wait for.
        self._reclaim_leaks()
        with self._lock:
            if not self._waiters and self._idle:
                entry = self._idle.pop()
                self.stats.idle = len(self._idle)
                return entry, False
            if not self._waiters and self._may_open():
                return None, True
            if timeout <= 0 or (
                self.max_waiting and len(self._waiters) >= self.max_waiting
            ):
                full = timeout > 0
                if full:
                    self.stats.rejected += 1
                else:
                    self.stats.timeouts += 1
                raise self._refusal(full, timeout)
            waiter = _Waiter(threading.Event())
            self._waiters.append(waiter)
            self.stats.waiting = len(self._waiters)
            # Someone waits: grow (the longest waiter opens) if allowed.
            self._grow_for_waiters()
        return self._wait(waiter, started + timeout, timeout)

    def _wait(
        self, waiter: _Waiter, until: float, timeout: float
    ) -> tuple[_Entry | None, bool]:
        try:
            while True:
                remaining = until - time.monotonic()
                if remaining <= 0 or waiter.event.wait(
                    min(remaining, _LEAK_SCAN_INTERVAL_S)
                ):
                    break
                self._reclaim_leaks()
        except BaseException:
            # Killed or interrupted while queued: pass on whatever we were given.
            self._withdraw(waiter)
            raise
        with self._lock:
            if not waiter.granted:
                self._waiters.remove(waiter)
                self.stats.waiting = len(self._waiters)
                self.stats.timeouts += 1
                raise self._refusal(False, timeout)
        return waiter.entry, waiter.may_open

    def _withdraw(self, waiter: _Waiter) -> None:
        with self._lock:
            if not waiter.granted:
                self._waiters.remove(waiter)
                self.stats.waiting = len(self._waiters)
                return
        if waiter.entry is not None:
            self._give_back(waiter.entry)
        else:
            self._opened()
            self._free_slot()

    def _refusal(self, full: bool, timeout: float) -> PoolTimeout:
        if full:
            return PoolFull(
                f"no database connection free: {len(self._waiters)} requests already "
                f"waiting (pool size {self.size})"
            )
        return PoolTimeout(
            f"no database connection free within {timeout * 1000:.0f} ms "
            f"(pool size {self.size})"
        )

    # Making the slot a usable connection

    def _ready(
        self, entry: _Entry | None, may_open: bool, connect: Callable[[], Any]
    ) -> Any:
        if entry is not None and not self._usable(entry):
            self._retire(entry)
            entry = None
        if entry is None:
            if not may_open:  # its connection was dead: open anew in its place
                with self._lock:
                    self._opening += 1
            try:
                entry = self._open_entry(connect)
            finally:
                self._opened()
        entry.owner = weakref.ref(greenlet.getcurrent())
        entry.site = _call_site()
        with self._lock:
            self._out[id(entry.connection)] = entry
            self.stats.in_use += 1
            self.stats.checkouts += 1
        return entry.connection

    def _usable(self, entry: _Entry) -> bool:
        connection = entry.connection
        if connection.closed:
            return False
        now = time.monotonic()
        if now >= entry.expires:
            return False
        if (
            self._readable(connection)
            or entry.idle_since < self._suspect_before
            or now - entry.idle_since > self.check_idle_after
        ):
            self.stats.checks += 1
            if not self._check(connection):
                # Whatever killed it (a restart, a failover) likely killed its
                # elders too: check them before reuse.
                self._suspect_before = now
                return False
        return True

    def _open_entry(self, connect: Callable[[], Any]) -> _Entry:
        connection = connect()
        self.stats.created += 1
        if self._sizer is not None:
            sizer, self._sizer = self._sizer, None
            try:
                size = max(1, sizer(connection))
            except Exception:
                logger.warning(
                    "could not size the pool from the database; using 10", exc_info=True
                )
                size = 10
            self._resize(size)
        expires = time.monotonic() + self.max_lifetime * (
            1 - _LIFETIME_JITTER * random.random()
        )
        return _Entry(connection, expires)

    def _shrink(self) -> bool:
        """Give up the slot being opened; cap the size at what is open."""
        with self._lock:
            if self._open <= 1:
                return False
            self._open -= 1
            first = self._size == self._configured_size
            self._size = min(self._size, self._open)
            self.stats.size = self._size
        if first:
            logger.warning(
                "PostgreSQL refused a new connection (too many clients); this pool "
                "works with the %d it has until maintenance tries to grow it again",
                self._size,
            )
        return True

    def _resize(self, size: int) -> None:
        with self._lock:
            self._size = self._configured_size = size
            self.stats.size = size
            self._grow_for_waiters()

    def _may_open(self) -> bool:
        """Take a slot to open a connection in, if the size and ``max_opening``
        allow (lock held)."""
        if self._open < self._size and self._opening < self.max_opening:
            self._open += 1
            self._opening += 1
            return True
        return False

    def _opened(self) -> None:
        """An open finished (or was given up): let the next waiter open one."""
        with self._lock:
            self._opening -= 1
            self._grow_for_waiters()

    def _grow_for_waiters(self) -> None:
        """Grant queued checkouts the right to open, while allowed (lock held)."""
        while self._waiters and self._may_open():
            self._grant(may_open=True)

    # Giving slots back

    def _reset_for_reuse(self, connection: Any) -> bool:
        dirty = getattr(connection, "session_dirty", False)
        try:
            keep = self._reset(connection)
        except Exception:
            logger.info("discarding a connection that failed to reset", exc_info=True)
            if connection.closed:
                self._suspect_before = time.monotonic()
            return False
        if dirty:
            self.stats.resets += 1
        return keep

    def _give_back(self, entry: _Entry) -> None:
        entry.owner = None
        entry.idle_since = time.monotonic()
        with self._lock:
            if self._waiters:
                self._grant(entry=entry)
            else:
                self._idle.append(entry)
                self.stats.idle = len(self._idle)

    def _close_entry(self, entry: _Entry) -> None:
        self._retire(entry)
        self._free_slot()

    def _retire(self, entry: _Entry) -> None:
        self.stats.discarded += 1
        _close(entry.connection)

    def _free_slot(self) -> None:
        with self._lock:
            self._open -= 1
            self._grow_for_waiters()

    def _grant(self, *, entry: _Entry | None = None, may_open: bool = False) -> None:
        """Hand a connection or a slot to the longest waiter (lock held)."""
        waiter = self._waiters.popleft()
        self.stats.waiting = len(self._waiters)
        waiter.entry = entry
        waiter.may_open = may_open
        waiter.event.set()

    # Leaks

    def _reclaim_leaks(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_leak_scan:
            return
        self._next_leak_scan = now + _LEAK_SCAN_INTERVAL_S
        with self._lock:
            gone = [entry for entry in self._out.values() if _owner_gone(entry)]
            for entry in gone:
                del self._out[id(entry.connection)]
                self.stats.in_use -= 1
                self.stats.reclaimed += 1
        for entry in gone:
            if entry.site not in self._leak_sites:
                self._leak_sites.add(entry.site)
                logger.warning(
                    "reclaimed a database connection whose greenlet or thread ended "
                    "without closing it; checked out at %s (close connections in "
                    "spawned greenlets, e.g. with "
                    "project.core.sql.with_own_connection)",
                    entry.site,
                )
            # Its owner may have left it mid-transaction: never hand it on.
            self._close_entry(entry)


def _too_many_clients(exc: BaseException) -> bool:
    # SQLSTATE 53300 arrives as a FATAL at connect time, before psycopg2 can
    # attach a pgcode, so the message is all there is.
    text = str(exc)
    return getattr(exc, "pgcode", None) == "53300" or (
        "too many clients" in text or "connection slots are reserved" in text
    )


def _owner_gone(entry: _Entry) -> bool:
    owner = entry.owner() if entry.owner is not None else None
    return owner is None or owner.dead


def _close(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        logger.debug("closing a pooled connection failed", exc_info=True)


# Frames from these files are the machinery, not the code that wanted a connection.
_MACHINERY = (
    "/django/",
    "/pg_pool/",
    "/psycopg2/",
    "/contextlib.py",
    "/project/core/sql.py",
)
_is_machinery: dict[
    Any, bool
] = {}  # by code object: a checkout costs a dict lookup per frame


def _call_site() -> str:
    """Where the checkout came from: the nearest frames outside Django and the pool."""
    frame = sys._getframe(2)
    sites = []
    depth = 0
    while frame is not None and len(sites) < 3 and depth < 60:
        code = frame.f_code
        machinery = _is_machinery.get(code)
        if machinery is None:
            machinery = _is_machinery[code] = any(
                part in code.co_filename for part in _MACHINERY
            )
        if not machinery:
            sites.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
        depth += 1
    return " < ".join(sites) or "unknown"


def start_maintenance(pool: ConnectionPool, interval: float) -> None:
    """Run ``pool.maintain()`` every ``interval`` seconds in a daemon thread.

    Without it a worker that gets no traffic would keep idle connections (and
    their server backends) forever.
    """
    pool_ref = weakref.ref(pool)

    def loop() -> None:
        while True:
            time.sleep(interval)
            target = pool_ref()
            if target is None:
                return
            try:
                target.maintain()
            except Exception:
                logger.exception("pool maintenance failed")
            del target

    threading.Thread(target=loop, name="pg-pool-maintenance", daemon=True).start()
