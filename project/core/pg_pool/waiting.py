"""The line of checkouts waiting for a connection, longest waiting first.

Like psycopg_pool's ``WaitingClient``: each waiter has its own event and is
handed what it gets (here an idle entry or the right to open one) by whoever
frees it, so a waiter that timed out or was killed can tell whether something
was handed to it and must be passed on.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .entry import Entry
from .stats import PoolStats


@dataclass(eq=False)
class Waiter:
    """A queued checkout: granted either an entry or the right to open one."""

    event: threading.Event
    entry: Entry | None = None
    may_open: bool = False
    joined: float = field(default_factory=time.monotonic)

    @property
    def granted(self) -> bool:
        """True once an entry or the right to open was handed to it."""
        return self.entry is not None or self.may_open

    def wait(self, until: float, tick: Callable[[], None], every: float) -> None:
        """Block until granted or until ``until``, running ``tick`` ``every`` s."""
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0 or self.event.wait(min(remaining, every)):
                return
            tick()


class WaitingLine:
    """Waiters in the order they came (the caller holds the pool's lock)."""

    def __init__(self, stats: PoolStats) -> None:
        self._waiters: deque[Waiter] = deque()
        self._stats = stats

    def __len__(self) -> int:
        return len(self._waiters)

    def oldest_wait(self) -> float:
        """Seconds the longest waiter has waited so far (0 with nobody waiting)."""
        # Read without the pool's lock: one deque index, stale by a tick at worst.
        try:
            return time.monotonic() - self._waiters[0].joined
        except IndexError:
            return 0.0

    def join(self) -> Waiter:
        """A new waiter at the end of the line."""
        waiter = Waiter(threading.Event())
        self._waiters.append(waiter)
        self._stats.waiting = len(self._waiters)
        return waiter

    def leave(self, waiter: Waiter) -> None:
        """Take a waiter that was granted nothing out of the line."""
        self._waiters.remove(waiter)
        self._stats.waiting = len(self._waiters)

    def grant(self, *, entry: Entry | None = None, may_open: bool = False) -> None:
        """Hand a connection or a slot to the longest waiter, and wake it."""
        waiter = self._waiters.popleft()
        self._stats.waiting = len(self._waiters)
        waiter.entry = entry
        waiter.may_open = may_open
        waiter.event.set()
