"""The id of the request a greenlet works for: in logs, upstream calls and SQL.

Like the deadline (``deadline.py``) it lives in a ``ContextVar``: each greenlet
has its own context and a new one starts empty, so ``fan_out`` hands the id to
its legs. Stdlib only: the gunicorn master and the logging setup import it.
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeGuard

# The header clients may send and every answer and upstream call carries.
REQUEST_ID_HEADER = "X-Request-ID"

# What the Django side leaves in the WSGI environ for the server's access log
# and log filters (project/server/): the request's id, its route, its sources.
REQUEST_ID_KEY = "gevent_django.request_id"
ROUTE_KEY = "gevent_django.route"
SOURCES_KEY = "gevent_django.sources"
# What the server edge leaves for Django: the request's deadline as the worker
# read it on arrival (``deadline.request_deadline``), or the
# ``deadline.InvalidTimeout`` its header raised.
DEADLINE_KEY = "gevent_django.deadline"

# What an id may look like: short, printable, and unable to close a SQL comment,
# break a log line or a header.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_current: ContextVar["str | None"] = ContextVar("request_id", default=None)


def is_valid_request_id(value: str | None) -> TypeGuard[str]:
    """True when ``value`` may be used as a request id as it is."""
    return value is not None and _VALID_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """Return a fresh request id: 128 bits from the kernel's random source, as
    32 lowercase hex digits.

    The length and alphabet of a uuid4's hex, and as unique (122 random bits
    there, 128 here; the kernel's source, so forked workers never repeat each
    other), for a quarter of the CPU: ``uuid4()`` builds a ``UUID`` and sets
    its version bits, 1.5 us against 0.4 us, and was 0.4 % of a W1 worker.
    """
    return os.urandom(16).hex()


def current_request_id() -> str | None:
    """Return the id of the request this greenlet works for, if any."""
    return _current.get()


def activate_request_id(request_id: str | None) -> None:
    """Make ``request_id`` this greenlet's current one (a fan-out leg's start)."""
    _current.set(request_id)


@contextmanager
def request_id_scope(request_id: str | None) -> Iterator[str | None]:
    """Run a block under ``request_id``; the previous one is restored afterwards."""
    if request_id is not None and not is_valid_request_id(request_id):
        raise ValueError(f"invalid request id {request_id!r}")
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)


def with_request_id_header(
    headers: dict[str, str] | None, request_id: str | None
) -> dict[str, str] | None:
    """``headers`` plus ``X-Request-ID: request_id`` (none when it is None).

    A header the caller set itself wins; ``headers`` is never changed in place.
    """
    if request_id is None:
        return headers
    if headers and any(name.lower() == "x-request-id" for name in headers):
        return headers
    return {**(headers or {}), REQUEST_ID_HEADER: request_id}


def with_sql_comment(query: object) -> object:
    """``query`` with a leading ``/* request_id='<id>' */`` when an id is current.

    sqlcommenter's form, so ``pg_stat_activity.query`` shows which request runs
    a statement. Only ``str`` and ``bytes`` are tagged (a ``psycopg2.sql``
    object goes as it is). The id is validated on the way in, so it cannot
    close the comment, and holds no ``%``, so bound parameters are unaffected.
    """
    request_id = _current.get()
    if request_id is None:
        return query
    if isinstance(query, str):
        return f"/* request_id='{request_id}' */ {query}"
    if isinstance(query, bytes):
        return b"/* request_id='" + request_id.encode() + b"' */ " + query
    return query
