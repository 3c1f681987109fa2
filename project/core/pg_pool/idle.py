"""The connections a pool keeps open while nobody uses them."""

from collections import deque

from .entry import Entry
from .stats import PoolStats


class IdleStack:
    """Idle entries, the most recently used on top (the caller holds the pool's lock).

    Reuse takes the top (warm, least likely dead); ``expire`` trims from the
    bottom, where the oldest sit.
    """

    def __init__(self, stats: PoolStats) -> None:
        self._entries: deque[Entry] = deque()
        self._stats = stats

    def __bool__(self) -> bool:
        return bool(self._entries)

    def pop(self) -> Entry:
        """The most recently used entry."""
        entry = self._entries.pop()
        self._stats.idle = len(self._entries)
        return entry

    def push(self, entry: Entry) -> None:
        """Put ``entry`` on top."""
        self._entries.append(entry)
        self._stats.idle = len(self._entries)

    def drain(self) -> list[Entry]:
        """Take every entry out."""
        entries, self._entries = list(self._entries), deque()
        self._stats.idle = 0
        return entries

    def expire(self, now: float, *, max_idle: float, min_idle: int) -> list[Entry]:
        """Take out what is past its lifetime, or idle longer than ``max_idle``
        while more than ``min_idle`` would stay."""
        keep: deque[Entry] = deque()
        doomed: list[Entry] = []
        for entry in self._entries:  # oldest first
            expired = now >= entry.expires
            too_long = now - entry.idle_since > max_idle
            if expired or (too_long and len(self._entries) - len(doomed) > min_idle):
                doomed.append(entry)
            else:
                keep.append(entry)
        self._entries = keep
        self._stats.idle = len(keep)
        return doomed
