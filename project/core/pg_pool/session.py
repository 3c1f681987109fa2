"""Session state of a pooled psycopg2 connection: noticed when changed, then reset.

PgBouncer's ``server_reset_query`` (``DISCARD ALL``) is the model, but paid only
by connections whose user changed something: every statement is scanned for
the few forms that outlive a transaction (``SET`` without ``LOCAL``, ``LISTEN``,
``PREPARE``, ``DECLARE``, temporary tables, session advisory locks,
``set_config``, ``DO``/``CALL`` whose effects cannot be seen from here) and for
holdable named cursors. A clean connection goes back with no round trip.

Not seen: a function called from a plain ``SELECT`` that changes session state
itself. Code that does that should ``SET LOCAL`` inside a transaction, as it
must behind PgBouncer in transaction mode anyway.
"""

import functools
import re
from typing import Any

from psycopg2 import extensions

from ..request_context import with_sql_comment

_TRANSACTION_IDLE = extensions.TRANSACTION_STATUS_IDLE

# A statement starts at the beginning, after ";", after a line break or after a
# closing comment; a false positive only costs one DISCARD ALL.
_SESSION_CHANGES = re.compile(
    r"""
    (?:^|[;\n]|\*/)\s*
    (?:
        SET(?!\s+(?:LOCAL|TRANSACTION|CONSTRAINTS)\b)\b
      | (?:LISTEN|PREPARE|DECLARE|LOAD|DO|CALL)\b
      | CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?\b
    )
    | \bINTO\s+TEMP(?:ORARY)?\b
    | \bset_config\s*\(
    | \bpg_(?:try_)?advisory_lock
    """,
    re.IGNORECASE | re.VERBOSE,
)


# Statements' verdicts remembered: an application sends the same few texts
# again and again (values travel as parameters), and the scan was 3.7 us of a
# W2 statement against 0.15 us for the lookup. Long texts (a bulk INSERT's
# rows of placeholders) are scanned each time, never kept: the memo holds at
# most 1,024 texts of at most 4,096 characters.
_VERDICTS_KEPT = 1024
_LONGEST_KEPT = 4096


def changes_session(query: Any, connection: Any = None) -> bool:
    """Return True when ``query`` may leave state behind on its session."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    elif not isinstance(query, str):
        # psycopg2.sql.Composable: render it to see what it says.
        if connection is None:
            return True
        query = query.as_string(connection)
    if len(query) > _LONGEST_KEPT:
        return _scan(query)
    return _text_changes_session(query)


def _scan(query: str) -> bool:
    return _SESSION_CHANGES.search(query) is not None


_text_changes_session = functools.lru_cache(maxsize=_VERDICTS_KEPT)(_scan)


class TrackingCursor(extensions.cursor):
    """Marks its connection when a statement changes the session; tags each
    statement with the current request id (``request_context.with_sql_comment``)."""

    def execute(self, query: Any, vars: Any = None) -> None:
        """Execute ``query``, noting a session change first."""
        self._note(query)
        return super().execute(with_sql_comment(query), vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        """Execute ``query`` for each parameter set, noting a session change first."""
        self._note(query)
        return super().executemany(with_sql_comment(query), vars_list)

    def callproc(self, procname: Any, parameters: Any = None) -> Any:
        """Call a function: what it does to the session cannot be known here."""
        self.connection.session_dirty = True
        return super().callproc(procname, parameters)

    def _note(self, query: Any) -> None:
        connection = self.connection
        if connection.session_dirty:
            return
        # A holdable named cursor outlives its transaction (Django's iterator()
        # in autocommit mode declares one WITH HOLD).
        if (self.name is not None and self.withhold) or changes_session(
            query, connection
        ):
            connection.session_dirty = True


class TrackedConnection(extensions.connection):
    """A psycopg2 connection that knows whether its session was changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_dirty = False
        # The client-side transaction characteristics every user starts with.
        self.baseline: tuple[Any, Any, Any] | None = None

    def remember_baseline(self) -> None:
        """Record the current transaction characteristics as the ones to restore."""
        self.baseline = (self.isolation_level, self.readonly, self.deferrable)


def reset_session(connection: Any) -> bool:
    """Make ``connection`` as a new user expects it; return True when it may be reused.

    Rolls back an open transaction; restores psycopg2's transaction
    characteristics; runs ``DISCARD ALL`` when the session was changed. A
    connection still running a query, or in an unknown state, cannot be reused.
    """
    if connection.closed:
        return False
    status = connection.info.transaction_status
    if status != _TRANSACTION_IDLE:
        if status not in (
            extensions.TRANSACTION_STATUS_INTRANS,
            extensions.TRANSACTION_STATUS_INERROR,
        ):
            return False
        connection.rollback()
    tracked = isinstance(connection, TrackedConnection)
    dirty = tracked and connection.session_dirty
    if tracked and connection.baseline is not None:
        current = (
            connection.isolation_level,
            connection.readonly,
            connection.deferrable,
        )
        if current != connection.baseline:
            autocommit = connection.autocommit
            # Client side only outside autocommit; in autocommit psycopg2 may
            # have sent SET default_transaction_*, which DISCARD ALL undoes.
            connection.autocommit = False
            isolation, readonly, deferrable = connection.baseline
            connection.isolation_level = isolation
            connection.readonly = readonly
            connection.deferrable = deferrable
            connection.autocommit = autocommit
            dirty = True
    if dirty:
        autocommit = connection.autocommit
        connection.autocommit = True  # DISCARD ALL refuses to run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("DISCARD ALL")
        connection.autocommit = autocommit
        connection.session_dirty = False
    if connection.notices:
        del connection.notices[:]
    if connection.notifies:
        del connection.notifies[:]
    return connection.info.transaction_status == _TRANSACTION_IDLE
