"""SQL helpers: bound parameters, a server-side timeout, connections released."""

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

from django.db import connections
from django.db.utils import OperationalError

from . import metrics
from .metrics import DB_QUERY_DURATION, DB_STATEMENT_TIMEOUTS, PendingHistogram, enabled

T = TypeVar("T")

# SQLSTATE 57014: statement cancelled (statement_timeout or a cancel request).
_QUERY_CANCELED = "57014"


@overload
def run_query(
    sql: str,
    params: Sequence[Any] = (),
    *,
    timeout: float | None = None,
    using: str = "default",
    as_dicts: Literal[False] = False,
) -> list[tuple]: ...


@overload
def run_query(
    sql: str,
    params: Sequence[Any] = (),
    *,
    timeout: float | None = None,
    using: str = "default",
    as_dicts: Literal[True],
) -> list[dict[str, Any]]: ...


def run_query(
    sql: str,
    params: Sequence[Any] = (),
    *,
    timeout: float | None = None,
    using: str = "default",
    as_dicts: bool = False,
) -> list[tuple] | list[dict[str, Any]]:
    """Run one statement on this greenlet's connection and return its rows.

    ``params`` are bound by the driver, never formatted into ``sql``. With a
    ``timeout`` the statement runs under ``SET LOCAL statement_timeout`` sent in
    the same round trip, so the server stops it even if this process cannot.
    A statement stopped by that timeout raises ``TimeoutError``. With
    ``as_dicts`` each row is a dict keyed by column name.
    """
    if timeout is not None:
        sql = "SET LOCAL statement_timeout = %s; " + sql
        params = [max(1, int(timeout * 1000)), *params]
    if not enabled():
        return _execute(sql, params, using, as_dicts)
    started = time.monotonic()
    outcome = "error"
    try:
        rows = _execute(sql, params, using, as_dicts)
        outcome = "ok"
        return rows
    except TimeoutError:
        outcome = "timeout"
        DB_STATEMENT_TIMEOUTS.inc()
        raise
    except BaseException as exc:
        # Not an Exception: an outer gevent.Timeout or the leg killed at its
        # deadline, which is a timeout too.
        if not isinstance(exc, Exception):
            outcome = "timeout"
        raise
    finally:
        _durations()[outcome].observe(time.monotonic() - started)


def _execute(
    sql: str, params: Sequence[Any], using: str, as_dicts: bool
) -> list[tuple] | list[dict[str, Any]]:
    """``run_query`` without its metrics: execute and fetch."""
    try:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            if not cursor.description:
                return []
            rows = cursor.fetchall()
            if as_dicts:
                names = [column.name for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in rows]
            return rows
    except OperationalError as exc:
        if getattr(exc.__cause__, "pgcode", None) == _QUERY_CANCELED:
            raise TimeoutError("statement cancelled by its timeout") from exc
        raise


@functools.cache
def _durations() -> dict[str, PendingHistogram]:
    """The query-duration histogram's child per outcome, made once per process;
    durations tallied in the worker and written by ``metrics.flush_batched``
    (an observation was two locked writes to the shared files, 0.7 % of a W2
    worker)."""
    return {
        outcome: PendingHistogram(DB_QUERY_DURATION.labels(outcome=outcome))
        for outcome in ("ok", "error", "timeout")
    }


def flush_pending() -> None:
    """Write the query durations tallied since the last flush (none before the
    first query: no series appears before its first observation)."""
    if _durations.cache_info().currsize:
        for duration in _durations().values():
            duration.flush()


metrics.before_exposition(flush_pending)


def with_own_connection(call: Callable[[], T]) -> T:
    """Run ``call`` and then close the DB connections it opened in this greenlet.

    Spawned greenlets get their own connections, which Django's
    ``request_finished`` never closes; without this each leg would leak one.
    """
    try:
        return call()
    finally:
        connections.close_all()
