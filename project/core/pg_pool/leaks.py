"""The connections a pool has handed out, and those whose holder ended.

HikariCP's leak detection (``leakDetectionThreshold``): each checkout records
its owner (the greenlet or thread) and where it was made; a connection whose
owner ended without giving it back is reclaimed and the site logged once. The
pool scans when it runs dry, while checkouts wait, and from maintenance.
"""

import sys
import threading
import time
import weakref
from types import FrameType
from typing import Any

import greenlet

from .entry import Entry
from .log import logger
from .stats import PoolStats

# The least time between two scans that are not forced.
SCAN_INTERVAL_S = 1.0

# Frames from these files are the machinery, not the code that wanted a connection.
_MACHINERY = (
    "/django/",
    "/pg_pool/",
    "/psycopg2/",
    "/contextlib.py",
    "/project/core/sql.py",
)
# By code object: a checkout costs a dict lookup per frame.
_is_machinery: dict[Any, bool] = {}


class Checkouts:
    """Entries out of the pool, by connection, with their owner and call site.

    Shares the pool's lock, which it takes itself; never held across IO.
    """

    def __init__(self, lock: threading.Lock, stats: PoolStats) -> None:
        self._lock = lock
        self._stats = stats
        self._out: dict[int, Entry] = {}
        self._next_scan = 0.0
        self._sites: set[tuple[tuple[str, int, str], ...]] = set()

    def add(self, entry: Entry) -> None:
        """Hand ``entry`` to the current greenlet (or thread)."""
        entry.owner = weakref.ref(greenlet.getcurrent())
        entry.site = _call_site()
        with self._lock:
            self._out[id(entry.connection)] = entry
            self._stats.in_use += 1
            self._stats.checkouts += 1

    def remove(self, connection: Any) -> Entry | None:
        """The entry of a connection given back; None if it is not out (any more)."""
        with self._lock:
            entry = self._out.pop(id(connection), None)
            if entry is not None:
                self._stats.in_use -= 1
        return entry

    def scan_due(self, now: float) -> bool:
        """True when a scan that is not forced would run at ``now``."""
        return now >= self._next_scan

    def reclaim(self, force: bool = False) -> list[Entry]:
        """Take back the entries whose owner ended (at most once a second unless
        ``force``); the caller closes them."""
        now = time.monotonic()
        if not force and now < self._next_scan:
            return []
        self._next_scan = now + SCAN_INTERVAL_S
        with self._lock:
            gone = [entry for entry in self._out.values() if _owner_gone(entry)]
            for entry in gone:
                del self._out[id(entry.connection)]
                self._stats.in_use -= 1
                self._stats.reclaimed += 1
        for entry in gone:
            if entry.site not in self._sites:
                self._sites.add(entry.site)
                logger.warning(
                    "reclaimed a database connection whose greenlet or thread ended "
                    "without closing it; checked out at %s (close connections in "
                    "spawned greenlets, e.g. with "
                    "project.core.sql.with_own_connection)",
                    _describe(entry.site),
                )
        return gone


def _owner_gone(entry: Entry) -> bool:
    owner = entry.owner() if entry.owner is not None else None
    return owner is None or owner.dead


def _call_site() -> tuple[tuple[str, int, str], ...]:
    """Where the checkout came from: the nearest frames outside Django and the
    pool, as (file, line, function); made into text only when a leak is logged
    (formatting it at every checkout was 0.9 % of a W2 worker)."""
    frame: FrameType | None = sys._getframe(2)
    sites: list[tuple[str, int, str]] = []
    depth = 0
    while frame is not None and len(sites) < 3 and depth < 60:
        code = frame.f_code
        machinery = _is_machinery.get(code)
        if machinery is None:
            machinery = _is_machinery[code] = any(
                part in code.co_filename for part in _MACHINERY
            )
        if not machinery:
            sites.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
        depth += 1
    return tuple(sites)


def _describe(site: tuple[tuple[str, int, str], ...]) -> str:
    """``file:line in function < ...`` for the log ('unknown' if no frame)."""
    return (
        " < ".join(f"{path}:{line} in {name}" for path, line, name in site) or "unknown"
    )
