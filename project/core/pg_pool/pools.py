"""This process's pools, one per set of connection parameters.

``DATABASES[alias]["OPTIONS"]`` keys read here (``POOL_OPTIONS``; the backend
removes them before connecting):

* ``pool_size``: most connections per process; ``None`` sizes the pool from the
  database's connection budget: ``max_connections`` minus its reserved slots
  minus ``pool_reserve``, shared by ``pool_share`` processes (workers × hosts);
* ``pool_timeout``: a cap in seconds on a checkout's wait, which is otherwise
  the time left on the current request's deadline (30 s outside a request);
* ``pool_max_waiting``: queued checkouts beyond this are refused at once (0: no cap);
* ``pool_check_idle_after``, ``pool_max_lifetime``, ``pool_max_idle`` (seconds)
  and ``pool_min_idle``: see ``ConnectionPool``.
"""

import copy
import threading
from collections.abc import Callable
from typing import Any

from ..deadline import current_deadline
from ..per_process import PerProcess
from .maintenance import start_maintenance
from .pool import ConnectionPool
from .probes import alive, budget_size, readable
from .session import reset_session

POOL_OPTIONS = (
    "pool_size",
    "pool_timeout",
    "pool_max_waiting",
    "pool_check_idle_after",
    "pool_max_lifetime",
    "pool_max_idle",
    "pool_min_idle",
    "pool_share",
    "pool_reserve",
)
# psycopg_pool's default: a checkout outside any request waits this long at most.
_NO_DEADLINE_WAIT_S = 30.0
_MAINTENANCE_INTERVAL_S = 10.0

# The parameters a pool serves, as sorted (name, value) pairs.
PoolKey = tuple[tuple[str, str], ...]

# A forked child must not share its parent's sockets.
_pools: PerProcess[dict[PoolKey, ConnectionPool]] = PerProcess(dict)
_pools_lock = threading.Lock()


def all_pools() -> dict[PoolKey, ConnectionPool]:
    """This process's pools, keyed by connection parameters."""
    return _pools.get()


def longest_checkout_wait() -> float:
    """Seconds the longest-waiting checkout of this process's pools has waited."""
    return max((pool.oldest_wait() for pool in all_pools().values()), default=0.0)


def total_size() -> int:
    """Connections this process's pools may hold in all."""
    return sum(pool.stats.size for pool in all_pools().values())


def close_idle_connections(dbname: str | None = None) -> None:
    """Close idle pooled connections (to ``dbname`` only, when given)."""
    for key, pool in list(all_pools().items()):
        if dbname is None or ("dbname", dbname) in key:
            pool.close_idle()


def pool_for(key: PoolKey, options: dict[str, Any]) -> ConnectionPool:
    """The pool for ``key``, made from ``options`` (and maintained) on first use."""
    pools = all_pools()
    pool = pools.get(key)
    if pool is not None:  # the hot path: no lock
        return pool
    with _pools_lock:
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = new_pool(options)
            start_maintenance(pool, _MAINTENANCE_INTERVAL_S)
    return pool


def new_pool(options: dict[str, Any]) -> ConnectionPool:
    """A pool configured by a database's ``OPTIONS``."""
    size = options.get("pool_size")
    share = int(options.get("pool_share", 1))
    reserve = int(options.get("pool_reserve", 10))

    def sizer(connection: Any) -> int:
        return budget_size(connection, share=share, reserve=reserve)

    return ConnectionPool(
        size=int(size) if size else None,
        sizer=None if size else sizer,
        max_waiting=int(options.get("pool_max_waiting", 0)),
        check_idle_after=float(options.get("pool_check_idle_after", 30.0)),
        max_lifetime=float(options.get("pool_max_lifetime", 3600.0)),
        max_idle=float(options.get("pool_max_idle", 600.0)),
        min_idle=int(options.get("pool_min_idle", 0)),
        reset=reset_session,
        check=alive,
        readable=readable,
    )


def checkout_wait(options: dict[str, Any]) -> float:
    """Seconds a checkout may wait: the deadline's remainder, capped by
    ``pool_timeout``."""
    cap = options.get("pool_timeout")
    deadline = current_deadline()
    if deadline is None:
        return float(cap) if cap is not None else _NO_DEADLINE_WAIT_S
    return deadline.timeout(None if cap is None else float(cap))


def pool_key(items: dict[str, Any]) -> PoolKey:
    """The key of the pool serving ``items``, the parameters its connections share."""
    return tuple(sorted((name, str(value)) for name, value in items.items()))


class SettingsMemo:
    """The last value derived from some settings, derived again only when they change.

    Django makes a database wrapper per thread, so under gevent one per
    request: what a wrapper derives from its settings (the connection
    parameters, the pool key) was derived anew at every checkout: 8 of the
    45 us a checkout and checkin took (``python -m loadtests.pool_cost``).
    Settings rarely change, but tests change them, in place too: a deep copy
    is what the next call compares with.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, Any]] = {}

    def get(self, name: str, source: Any, derive: Callable[[], Any]) -> Any:
        """``derive()``, or what it returned last for ``name`` (a database
        alias) if ``source`` is unchanged."""
        last = self._last.get(name)
        if last is not None and last[0] == source:
            return last[1]
        value = derive()
        self._last[name] = (copy.deepcopy(source), value)
        return value
