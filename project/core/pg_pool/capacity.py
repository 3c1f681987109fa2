"""How many connections a pool may have open, and how many it is opening.

Growth goes a few connections at a time (psycopg_pool grows by one connection
while clients wait, HikariCP through a single-threaded add-connection
executor): a burst of 200 requests grows the pool to what the load needs
instead of forking 200 backends at once, a storm that made every request of
the burst wait for PostgreSQL's fork and authentication.
"""

from collections.abc import Callable
from typing import Any

from .log import logger
from .stats import PoolStats

# When the database cannot tell its connection budget.
_FALLBACK_SIZE = 10


class Capacity:
    """Open and opening connections counted against the size (pool lock held).

    ``size`` ``None`` means not sized yet: one connection may be opened
    meanwhile, and its server tells the size (``size_from``).
    """

    def __init__(self, size: int | None, stats: PoolStats) -> None:
        self.open = 0  # connections open or being opened: idle + out + opening
        self.opening = 0  # connections being opened right now
        self.size = size if size is not None else 1  # one opener until sized
        self.configured = size
        self._stats = stats

    def take_opening(self, max_opening: int) -> bool:
        """Take a slot to open a connection in, if size and ``max_opening`` allow."""
        if self.open < self.size and self.opening < max_opening:
            self.open += 1
            self.opening += 1
            return True
        return False

    def reopening(self) -> None:
        """A dead idle connection's slot is opened anew."""
        self.opening += 1

    def opened(self) -> None:
        """An open finished or was given up."""
        self.opening -= 1

    def free(self) -> None:
        """A connection was closed: its slot is free."""
        self.open -= 1

    @property
    def shrunk(self) -> bool:
        """True when the size is below the configured one (a full server)."""
        return self.size != self.configured

    def shrink(self) -> bool:
        """Give up the slot being opened and cap the size at what is open.

        False when nothing else is open: there is no connection of our own to
        wait for.
        """
        if self.open <= 1:
            return False
        self.open -= 1
        self.size = min(self.size, self.open)
        self._stats.size = self.size
        return True

    def resize(self, size: int) -> None:
        """Make ``size`` the size, and the one to return to after shrinking."""
        self.size = self.configured = size
        self._stats.size = size


def size_from(sizer: Callable[[Any], int], connection: Any) -> int:
    """The size ``sizer`` reads through ``connection``; a fallback if it fails."""
    try:
        return max(1, sizer(connection))
    except Exception:
        logger.warning(
            "could not size the pool from the database; using %d",
            _FALLBACK_SIZE,
            exc_info=True,
        )
        return _FALLBACK_SIZE
