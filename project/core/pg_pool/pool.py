"""A bounded connection pool for psycopg2 under gevent, one per worker process.

Why not django-db-geventpool: it has no checkout timeout (exhaustion hangs),
races on its size at start-up, closes every connection when one is broken and
spends a ``SELECT 1`` on every checkout. Here:

* the size is a semaphore, so it can never be exceeded, even at start-up;
* a checkout waits at most ``timeout`` seconds, then raises ``PoolTimeout``;
* connections are reused most-recently-used first and only checked with a
  round trip when they sat idle longer than ``check_idle_after``;
* a broken, busy or unknown-state connection is discarded on its own;
* a connection inside a transaction is rolled back before it goes back.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2
from gevent.lock import BoundedSemaphore
from psycopg2 import extensions

logger = logging.getLogger(__name__)

_CLEAN = extensions.TRANSACTION_STATUS_IDLE
_ROLLBACK_FIRST = (
    extensions.TRANSACTION_STATUS_INTRANS,
    extensions.TRANSACTION_STATUS_INERROR,
)


class PoolTimeout(psycopg2.OperationalError):
    """No connection became free within the checkout timeout.

    A psycopg2 ``OperationalError`` so that Django wraps it like any other
    failure to connect (``django.db.OperationalError``).
    """


@dataclass
class PoolStats:
    """Counters for one pool: gauges (in_use, idle, waiting) and totals."""

    size: int
    in_use: int = 0
    idle: int = 0
    waiting: int = 0
    timeouts: int = 0
    created: int = 0
    discarded: int = 0
    checkouts: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a dict (for logs and metrics)."""
        return asdict(self)


class ConnectionPool:
    """At most ``size`` connections; see the module docstring."""

    def __init__(self, *, size: int, timeout: float, check_idle_after: float) -> None:
        self._slots = BoundedSemaphore(size)
        self._idle: deque[tuple[Any, float]] = deque()
        # A greenlet lock once patched; never held across IO.
        self._lock = threading.Lock()
        self.timeout = timeout
        self.check_idle_after = check_idle_after
        self.stats = PoolStats(size=size)

    def checkout(self, connect: Callable[[], Any]) -> Any:
        """Return a healthy connection, waiting at most ``timeout`` for a free slot.

        ``connect`` opens a new connection when no idle one can be reused.
        """
        self.stats.waiting += 1
        try:
            acquired = self._slots.acquire(timeout=self.timeout)
        finally:
            self.stats.waiting -= 1
        if not acquired:
            self.stats.timeouts += 1
            raise PoolTimeout(
                f"no database connection free within {self.timeout * 1000:.0f} ms "
                f"(pool size {self.stats.size})"
            )
        try:
            connection = self._reuse()
            if connection is None:
                connection = connect()
                self.stats.created += 1
        except BaseException:
            self._slots.release()
            raise
        self.stats.in_use += 1
        self.stats.checkouts += 1
        return connection

    def checkin(self, connection: Any) -> None:
        """Give a connection back: kept if clean (after a rollback if needed)."""
        try:
            if self._reset(connection):
                with self._lock:
                    self._idle.append((connection, time.monotonic()))
                    self.stats.idle = len(self._idle)
            else:
                self._discard(connection)
        finally:
            self.stats.in_use -= 1
            self._slots.release()

    def close_idle(self) -> int:
        """Close every idle connection (e.g. before dropping the database)."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
            self.stats.idle = 0
        for connection, _ in idle:
            self._discard(connection)
        return len(idle)

    def _reuse(self) -> Any | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                # Most recent first: warm, and the least likely to have died.
                connection, since = self._idle.pop()
                self.stats.idle = len(self._idle)
            if connection.closed:
                self._discard(connection)
                continue
            stale = time.monotonic() - since > self.check_idle_after
            if stale and not _alive(connection):
                self._discard(connection)
                continue
            return connection

    def _reset(self, connection: Any) -> bool:
        if connection.closed:
            return False
        try:
            status = connection.info.transaction_status
            if status in _ROLLBACK_FIRST:
                connection.rollback()
                status = connection.info.transaction_status
        except Exception:
            logger.info(
                "discarding a connection that failed to roll back", exc_info=True
            )
            return False
        # ACTIVE (a query still running, e.g. an interrupted leg) or UNKNOWN: unusable.
        return status == _CLEAN

    def _discard(self, connection: Any) -> None:
        self.stats.discarded += 1
        try:
            connection.close()
        except Exception:
            logger.debug("closing a discarded connection failed", exc_info=True)


def _alive(connection: Any) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False
