"""Whether an idle connection may be reused, and making a given-back one reusable.

Liveness is cheap: reuse costs no round trip unless the socket has something
to say (a dead server's goodbye makes it readable), the connection sat idle
past ``check_idle_after``, or another connection was found broken since it
went idle. Then all older ones are suspect (HikariCP's "evict on broken";
psycopg_pool's ``check`` callback, which it runs on every checkout).
"""

import time
from collections.abc import Callable
from typing import Any

from .entry import Entry
from .log import logger
from .stats import PoolStats


class Health:
    """Checks before reuse and the reset after use, with the pool's callbacks.

    ``check`` runs a round trip (True: alive), ``readable`` polls the idle
    socket (True: the server said something), ``reset`` makes a connection
    as a new user expects it (True: it may be reused).
    """

    def __init__(
        self,
        *,
        check: Callable[[Any], bool],
        readable: Callable[[Any], bool],
        reset: Callable[[Any], bool],
        stats: PoolStats,
    ) -> None:
        self._check = check
        self._readable = readable
        self._reset = reset
        self._stats = stats
        self._suspect_before = 0.0  # connections idle since before this: check

    def usable(self, entry: Entry, check_idle_after: float) -> bool:
        """True when ``entry``'s connection may be handed out again."""
        connection = entry.connection
        if connection.closed:
            return False
        now = time.monotonic()
        if now >= entry.expires:
            return False
        if (
            self._readable(connection)
            or entry.idle_since < self._suspect_before
            or now - entry.idle_since > check_idle_after
        ):
            self._stats.checks += 1
            if not self._check(connection):
                # Whatever killed it (a restart, a failover) likely killed its
                # elders too: check them before reuse.
                self._suspect_before = now
                return False
        return True

    def reset_for_reuse(self, connection: Any) -> bool:
        """Reset a given-back connection; False when it cannot be reused."""
        dirty = getattr(connection, "session_dirty", False)
        try:
            keep = self._reset(connection)
        except Exception:
            logger.info("discarding a connection that failed to reset", exc_info=True)
            if connection.closed:
                self._suspect_before = time.monotonic()
            return False
        if dirty:
            self._stats.resets += 1
        return keep
