"""Readiness: can this worker reach its database right now?"""

import gevent
from django.db import connection

from project.core.sql import run_query

READY_TIMEOUT_S = 1.0


def check_database(*, timeout: float = READY_TIMEOUT_S) -> str | None:
    """Return None when ``SELECT 1`` answers within ``timeout``, else the reason."""
    try:
        with gevent.Timeout(
            timeout, TimeoutError(f"no answer within {timeout * 1000:.0f} ms")
        ):
            run_query("SELECT 1", timeout=timeout)
    except TimeoutError as exc:
        # The connection may be half-open after an interrupted connect; drop it.
        connection.close()
        return f"database: {exc}"
    except Exception as exc:
        connection.close()
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"database: {first_line}"
    return None
