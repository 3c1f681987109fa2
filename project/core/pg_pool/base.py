"""Django's PostgreSQL backend with connections taken from a per-worker pool.

``DATABASES[alias]["OPTIONS"]`` keys read here and removed before connecting:

* ``pool_size``: most connections per process; ``None`` sizes the pool from the
  database's connection budget: ``max_connections`` minus its reserved slots
  minus ``pool_reserve``, shared by ``pool_share`` processes (workers × hosts);
* ``pool_timeout``: a cap in seconds on a checkout's wait, which is otherwise
  the time left on the current request's deadline (30 s outside a request);
* ``pool_max_waiting``: queued checkouts beyond this are refused at once (0: no cap);
* ``pool_check_idle_after``, ``pool_max_lifetime``, ``pool_max_idle`` (seconds)
  and ``pool_min_idle``: see ``ConnectionPool``.

A pool serves one set of connection parameters including every option Django
applies after connecting (isolation level, role, time zone), so a connection
only ever goes to users who would have set it up the same way.
"""

import select
import threading
from typing import Any

from django.db.backends.postgresql import base, creation
from django.db.backends.postgresql.psycopg_any import IsolationLevel

from ..deadline import current_deadline
from ..per_process import PerProcess
from .pool import ConnectionPool, start_maintenance
from .session import TrackedConnection, TrackingCursor, reset_session

_POOL_OPTIONS = (
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

# A forked child must not share its parent's sockets.
_pools: PerProcess[dict[tuple, ConnectionPool]] = PerProcess(dict)
_pools_lock = threading.Lock()


def all_pools() -> dict[tuple, ConnectionPool]:
    """This process's pools, keyed by connection parameters."""
    return _pools.get()


def close_idle_connections(dbname: str | None = None) -> None:
    """Close idle pooled connections (to ``dbname`` only, when given)."""
    for key, pool in list(all_pools().items()):
        if dbname is None or ("dbname", dbname) in key:
            pool.close_idle()


def budget_size(connection: Any, *, share: int, reserve: int) -> int:
    """Connections one process may open: the database's budget split ``share`` ways.

    The budget is ``max_connections`` minus the slots PostgreSQL reserves for
    superusers (and, from 16 on, ``reserved_connections``) minus ``reserve``
    for everything else (migrations, psql, monitoring).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)"
        )
        available = cursor.fetchone()[0]
    _end_implicit_transaction(connection)
    return max(2, (available - reserve) // max(1, share))


def _end_implicit_transaction(connection: Any) -> None:
    # Outside autocommit psycopg2 opened a transaction for our query; the next
    # user must get the connection idle.
    if not connection.autocommit:
        connection.rollback()


def _alive(connection: Any) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        _end_implicit_transaction(connection)
        return True
    except Exception:
        return False


def _poll_class() -> Any:
    # gevent's patched poll would go through the hub; a zero-timeout poll never
    # blocks, so the original is both safe and cheaper.
    try:
        from gevent import monkey

        return monkey.get_original("select", "poll")
    except (ImportError, AttributeError):
        return select.poll


_poll = _poll_class()
_POLL_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def _readable(connection: Any) -> bool:
    """True when an idle connection has data waiting: a server's goodbye, mostly."""
    poller = _poll()
    poller.register(connection.fileno(), _POLL_EVENTS)
    return bool(poller.poll(0))


class DatabaseCreation(creation.DatabaseCreation):
    """Closes pooled connections to the test database before dropping it."""

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        close_idle_connections(test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)


class DatabaseWrapper(base.DatabaseWrapper):
    """Takes connections from the pool instead of opening them; closing returns them."""

    creation_class = DatabaseCreation

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._from_pool: ConnectionPool | None = None
        self._key_cache: tuple[dict[str, Any], tuple] | None = None
        # Set while Django closes a connection it judged unusable: discard it.
        self._discard_on_close = False
        self._closing_if_unusable = False

    def get_connection_params(self) -> dict[str, Any]:
        """Connection parameters without our pool options, with session tracking."""
        params = super().get_connection_params()
        for option in _POOL_OPTIONS:
            params.pop(option, None)
        params["connection_factory"] = TrackedConnection
        if params.get("cursor_factory") is base.Cursor:
            params["cursor_factory"] = TrackingCursor
        return params

    def _pool_key(self, conn_params: dict[str, Any]) -> tuple:
        options = self.settings_dict["OPTIONS"]
        items = {
            **conn_params,
            "_isolation_level": options.get("isolation_level"),
            "_assume_role": options.get("assume_role"),
            "_time_zone": self.timezone_name,
        }
        # Settings rarely change (tests do it): compare, reuse the sorted key.
        cached = self._key_cache
        if cached is not None and cached[0] == items:
            return cached[1]
        key = tuple(sorted((name, str(value)) for name, value in items.items()))
        self._key_cache = (items, key)
        return key

    def _pool(self, conn_params: dict[str, Any]) -> ConnectionPool:
        pools = all_pools()
        key = self._pool_key(conn_params)
        pool = pools.get(key)
        if pool is not None:  # the hot path: no lock
            return pool
        with _pools_lock:
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = self._new_pool()
                start_maintenance(pool, _MAINTENANCE_INTERVAL_S)
        return pool

    def _new_pool(self) -> ConnectionPool:
        options = self.settings_dict["OPTIONS"]
        size = options.get("pool_size")
        share = int(options.get("pool_share", 1))
        reserve = int(options.get("pool_reserve", 10))
        return ConnectionPool(
            size=int(size) if size else None,
            sizer=None
            if size
            else lambda connection: budget_size(
                connection, share=share, reserve=reserve
            ),
            max_waiting=int(options.get("pool_max_waiting", 0)),
            check_idle_after=float(options.get("pool_check_idle_after", 30.0)),
            max_lifetime=float(options.get("pool_max_lifetime", 3600.0)),
            max_idle=float(options.get("pool_max_idle", 600.0)),
            min_idle=int(options.get("pool_min_idle", 0)),
            reset=reset_session,
            check=_alive,
            readable=_readable,
        )

    def _checkout_wait(self) -> float:
        """Seconds a checkout may wait: the deadline's remainder,
        capped by ``pool_timeout``."""
        cap = self.settings_dict["OPTIONS"].get("pool_timeout")
        deadline = current_deadline()
        if deadline is None:
            return float(cap) if cap is not None else _NO_DEADLINE_WAIT_S
        remaining = deadline.remaining()
        return remaining if cap is None else min(float(cap), remaining)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Check a connection out of this worker's pool for these parameters."""
        pool = self._pool(conn_params)

        def connect() -> Any:
            # Django's own connect validates the options, sets isolation_level.
            connection = super(DatabaseWrapper, self).get_new_connection(conn_params)
            connection.remember_baseline()
            return connection

        connection = pool.checkout(connect, timeout=self._checkout_wait())
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        # A reused connection: as Django would have set it (only valid levels
        # ever reach a pool's connection; an invalid one fails in connect()).
        self.isolation_level = IsolationLevel(level or IsolationLevel.READ_COMMITTED)
        self._from_pool = pool
        return connection

    def connect(self) -> None:
        """Connect; if setting the connection up fails, its slot goes back at once."""
        try:
            super().connect()
        except BaseException:
            if self.connection is not None:
                self._discard_on_close = True
                try:
                    self._close()
                finally:
                    self.connection = None
            raise

    def init_connection_state(self) -> None:
        """Django's own setup (time zone, role) follows the pool key: no user change."""
        dirty = self.connection.session_dirty
        super().init_connection_state()
        self.connection.session_dirty = dirty

    def is_usable(self) -> bool:
        """False for a connection already given back, instead of an error."""
        if self.connection is None:
            return False
        return super().is_usable()

    def close_if_health_check_failed(self) -> None:
        """Django closes here only when the health check failed: discard."""
        self._discard_on_close = True
        try:
            super().close_if_health_check_failed()
        finally:
            self._discard_on_close = False

    def close_if_unusable_or_obsolete(self) -> None:
        """Discard what Django closes as unusable; give back what it closes as old."""
        self._closing_if_unusable = True
        try:
            super().close_if_unusable_or_obsolete()
        finally:
            self._closing_if_unusable = False

    def _close(self) -> None:
        """Return the connection to its pool, or discard it if it cannot be trusted."""
        connection = self.connection
        if connection is None:
            return
        pool, self._from_pool = self._from_pool, None
        # Like Django's psycopg 3 pool: the wrapper lets go of what it gave back.
        self.connection = None
        if pool is None:
            connection.close()
            return
        discard = self._discard_on_close or (
            # Django closes here on errors it could not clear or an autocommit
            # mode left changed ("don't take chances"); else it is only old.
            self._closing_if_unusable
            and (
                self.errors_occurred
                or self.autocommit != self.settings_dict["AUTOCOMMIT"]
            )
        )
        self._discard_on_close = False
        with self.wrap_database_errors:
            pool.checkin(connection, discard=discard)
