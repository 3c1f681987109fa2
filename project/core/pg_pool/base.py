"""Django's PostgreSQL backend with connections taken from a per-worker pool.

Settings (``DATABASES[alias]["OPTIONS"]``, removed before connecting):
``pool_size``, ``pool_timeout`` (s), ``pool_check_idle_after`` (s).
"""

import os
import threading
from typing import Any

from django.db.backends.postgresql import base, creation
from django.db.backends.postgresql.psycopg_any import IsolationLevel

from .pool import ConnectionPool

_POOL_OPTIONS = ("pool_size", "pool_timeout", "pool_check_idle_after")
_pools: dict[tuple, ConnectionPool] = {}
_pools_lock = threading.Lock()
_pools_pid = [os.getpid()]


def _pool_key(conn_params: dict[str, Any]) -> tuple:
    return tuple(sorted((key, str(value)) for key, value in conn_params.items()))


def all_pools() -> dict[tuple, ConnectionPool]:
    """This process's pools, keyed by connection parameters."""
    if _pools_pid[0] != os.getpid():
        # A forked child must not share its parent's sockets.
        _pools.clear()
        _pools_pid[0] = os.getpid()
    return _pools


def close_idle_connections(dbname: str | None = None) -> None:
    """Close idle pooled connections (to ``dbname`` only, when given)."""
    for key, pool in list(all_pools().items()):
        if dbname is None or ("dbname", dbname) in key:
            pool.close_idle()


class DatabaseCreation(creation.DatabaseCreation):
    """Closes pooled connections to the test database before dropping it."""

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        close_idle_connections(test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)


class DatabaseWrapper(base.DatabaseWrapper):
    """Takes connections from the pool instead of opening them; closing returns them."""

    creation_class = DatabaseCreation

    def get_connection_params(self) -> dict[str, Any]:
        """Connection parameters without our pool options."""
        params = super().get_connection_params()
        for option in _POOL_OPTIONS:
            params.pop(option, None)
        return params

    def _pool(self, conn_params: dict[str, Any]) -> ConnectionPool:
        pools = all_pools()
        key = _pool_key(conn_params)
        pool = pools.get(key)
        if pool is not None:  # the hot path: no lock
            return pool
        with _pools_lock:
            pool = pools.get(key)
            if pool is None:
                options = self.settings_dict["OPTIONS"]
                pool = pools[key] = ConnectionPool(
                    size=int(options.get("pool_size", 20)),
                    timeout=float(options.get("pool_timeout", 2.0)),
                    check_idle_after=float(options.get("pool_check_idle_after", 30.0)),
                )
        return pool

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Check a connection out of this worker's pool for these parameters."""
        pool = self._pool(conn_params)
        # The parent opens new connections and sets self.isolation_level; a
        # reused connection already has that level, so only the attribute is set.
        connection = pool.checkout(
            lambda: super(DatabaseWrapper, self).get_new_connection(conn_params)
        )
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        self.isolation_level = IsolationLevel(level or IsolationLevel.READ_COMMITTED)
        self._from_pool = pool
        return connection

    def _close(self) -> None:
        """Return the connection to its pool (the pool discards it if unusable)."""
        if self.connection is None:
            return
        pool, self._from_pool = getattr(self, "_from_pool", None), None
        if pool is None:
            self.connection.close()
        else:
            pool.checkin(self.connection)
