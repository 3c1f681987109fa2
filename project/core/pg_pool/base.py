"""Django's PostgreSQL backend with connections taken from a per-worker pool.

The pool options of ``DATABASES[alias]["OPTIONS"]`` are described in
:mod:`.pools`. A pool serves one set of connection parameters including every
option Django applies after connecting (isolation level, role, time zone), so a
connection only ever goes to users who would have set it up the same way.
"""

from typing import Any

from django.db.backends.postgresql import base, creation
from django.db.backends.postgresql.psycopg_any import IsolationLevel
from psycopg2 import extensions

from .pool import ConnectionPool
from .pools import (
    POOL_OPTIONS,
    PoolKey,
    SettingsMemo,
    checkout_wait,
    close_idle_connections,
    pool_for,
    pool_key,
)
from .receivers import mark_wrapper_made
from .session import TrackedConnection, TrackingCursor

# Every wrapper's (Django makes one per greenlet): see ``SettingsMemo``.
_DERIVED = SettingsMemo()


class DatabaseCreation(creation.DatabaseCreation):
    """Closes pooled connections to the test database before dropping it."""

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        close_idle_connections(test_database_name)
        # django-stubs leave out this private hook of destroy_test_db(), which
        # Django 5.2's BaseDatabaseCreation defines.
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]


class DatabaseWrapper(base.DatabaseWrapper):
    """Takes connections from the pool instead of opening them; closing returns them."""

    creation_class = DatabaseCreation

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mark_wrapper_made()  # the request signals' receivers look for it
        self._from_pool: ConnectionPool | None = None
        # Set while Django closes a connection it judged unusable: discard it.
        self._discard_on_close = False
        self._closing_if_unusable = False

    def get_connection_params(self) -> dict[str, Any]:
        """Connection parameters without our pool options, with session tracking."""
        return dict(self._derived()[0])

    def _derived(self) -> tuple[dict[str, Any], PoolKey]:
        """The connection parameters and pool key of these settings (made once)."""
        return _DERIVED.get(
            self.alias, (self.settings_dict, self.timezone_name), self._derive
        )

    def _derive(self) -> tuple[dict[str, Any], PoolKey]:
        params = super().get_connection_params()
        for option in POOL_OPTIONS:
            params.pop(option, None)
        params["connection_factory"] = TrackedConnection
        # Django's default cursor for psycopg2 (its ``base.Cursor``).
        if params.get("cursor_factory") is extensions.cursor:
            params["cursor_factory"] = TrackingCursor
        return params, self._key(params)

    def _key(self, conn_params: dict[str, Any]) -> PoolKey:
        """The pool key: these parameters and the options applied after connecting."""
        options = self.settings_dict["OPTIONS"]
        return pool_key(
            {
                **conn_params,
                "_isolation_level": options.get("isolation_level"),
                "_assume_role": options.get("assume_role"),
                "_time_zone": self.timezone_name,
            }
        )

    def _pool(self, conn_params: dict[str, Any]) -> ConnectionPool:
        """This process's pool for these parameters and the options applied after."""
        params, key = self._derived()
        if conn_params != params:
            key = self._key(conn_params)
        return pool_for(key, self.settings_dict["OPTIONS"])

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Check a connection out of this worker's pool for these parameters."""
        pool = self._pool(conn_params)

        def connect() -> Any:
            # Django's own connect validates the options, sets isolation_level.
            connection = super(DatabaseWrapper, self).get_new_connection(conn_params)
            connection.remember_baseline()
            return connection

        connection = pool.checkout(
            connect, timeout=checkout_wait(self.settings_dict["OPTIONS"])
        )
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
