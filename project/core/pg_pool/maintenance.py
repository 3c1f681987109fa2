"""A pool's maintenance, run in the background.

``ConnectionPool.maintain`` closes idle connections past ``max_lifetime``
(with jitter, see ``Entry.new``) or ``max_idle`` above ``min_idle``, as in
psycopg_pool and HikariCP, never one that is in use, and reclaims leaks. Like
psycopg_pool's maintenance tasks, the loop holds the pool only weakly, so a
pool no longer used does not live on for it.
"""

import threading
import time
import weakref
from typing import Protocol

from .log import logger


class Maintained(Protocol):
    """What the maintenance loop needs of a pool."""

    def maintain(self) -> None:
        """Close what is past its time; reclaim leaks."""


def start_maintenance(pool: Maintained, interval: float) -> None:
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
