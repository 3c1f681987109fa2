"""What a pool asks a live psycopg2 connection, without disturbing its user.

Alive (a round trip), readable (the server said something while the
connection sat idle: a goodbye, mostly) and the database's connection budget
(the pool's size). Each leaves the connection idle, as the next user expects.
"""

import select
from typing import Any


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


def alive(connection: Any) -> bool:
    """True when the server answers ``SELECT 1`` on ``connection``."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        _end_implicit_transaction(connection)
        return True
    except Exception:
        return False


def _end_implicit_transaction(connection: Any) -> None:
    # Outside autocommit psycopg2 opened a transaction for our query; the next
    # user must get the connection idle.
    if not connection.autocommit:
        connection.rollback()


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


def readable(connection: Any) -> bool:
    """True when an idle connection has data waiting: a server's goodbye, mostly."""
    poller = _poll()
    poller.register(connection.fileno(), _POLL_EVENTS)
    return bool(poller.poll(0))
