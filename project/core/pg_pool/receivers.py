"""Django's database receivers of the request signals, skipped where no database
wrapper was ever made.

Django resets the query log at ``request_started`` and closes old connections
at ``request_started`` and ``request_finished`` (``django.db.reset_queries``
and ``close_old_connections``); closing is how this backend gets a request's
connection back into the pool. Each looks every alias up in ``connections``'
per-context storage (asgiref's ``Local``: a lock and a ``ContextVar`` per
lookup), three times a request, also for the many requests that never touch
the database: 1.2 % of a W1 worker. This backend marks the context in which it
makes a wrapper (``connections`` keeps the wrapper in that same context), and
the receivers below run Django's own only where that mark is: a request that
used the database is closed exactly as before; one that did not skips the
lookups.
"""

from contextvars import ContextVar
from typing import Any

import django.db
from django.conf import settings
from django.core.signals import request_finished, request_started

_wrapper_made: ContextVar[bool] = ContextVar("pg_pool_wrapper_made", default=False)

ENGINE = "project.core.pg_pool"


def mark_wrapper_made() -> None:
    """Record that a database wrapper exists in the current context."""
    if not _wrapper_made.get():
        _wrapper_made.set(True)


def reset_queries(**kwargs: Any) -> None:
    """``django.db.reset_queries`` where a wrapper was made in this context."""
    if _wrapper_made.get():
        django.db.reset_queries(**kwargs)


def close_old_connections(**kwargs: Any) -> None:
    """``django.db.close_old_connections`` where a wrapper was made in this context."""
    if _wrapper_made.get():
        django.db.close_old_connections(**kwargs)


def install() -> bool:
    """Put these receivers in the place of Django's when every database uses this
    backend (another backend's wrappers are not marked); True if they are.

    For the server's process only: Django's test client disconnects and
    reconnects Django's own ``close_old_connections`` around its requests.
    """
    if not all(db["ENGINE"] == ENGINE for db in settings.DATABASES.values()):
        return False
    request_started.disconnect(django.db.reset_queries)
    request_started.disconnect(django.db.close_old_connections)
    request_finished.disconnect(django.db.close_old_connections)
    request_started.connect(reset_queries)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    return True
