"""The one place that knows how to monkey-patch the process for gevent.

Entry points call :func:`patch` as their first statement, before Django, ``ssl``
or ``threading`` are imported: objects created before patching (Django's
connection handler, SSL contexts, thread locals) keep their blocking,
per-thread behaviour and silently serialise every greenlet.

This module imports nothing but the standard library at module level so that
importing it cannot itself import something too early.
"""

import logging
import os
import sys
from typing import Any, TypedDict

logger = logging.getLogger(__name__)

# Imported before patching, these modules keep references to unpatched
# primitives (thread locals, blocking sockets) that gevent cannot swap later.
_TOO_EARLY = ("django.db", "psycopg2", "requests", "urllib3", "ssl")


class _State(TypedDict):
    patched: bool
    late_modules: tuple[str, ...]  # imported before patching


_state: _State = {"patched": False, "late_modules": ()}


def patch_enabled() -> bool:
    """Return False when ``GEVENT_PATCH=0`` asks to run unpatched."""
    return os.environ.get("GEVENT_PATCH", "1").strip().lower() not in (
        "0",
        "false",
        "no",
    )


def patch() -> bool:
    """Monkey-patch the stdlib for gevent and make psycopg2 cooperative.

    Idempotent: a second call (or a process that gunicorn's gevent worker already
    patched) only makes sure psycopg2 has the green wait callback and gevent
    has stopped recording greenlet trees. Returns True when the process is
    patched on return.
    """
    if not patch_enabled():
        return False
    if _state["patched"]:
        return True

    from gevent import config, monkey

    if not monkey.is_module_patched("socket"):
        # gunicorn's gevent worker patches in its own init_process; anything else
        # must be patched here, and anything imported before now is suspect.
        _state["late_modules"] = tuple(m for m in _TOO_EARLY if m in sys.modules)
        if "django.conf" in sys.modules:
            # gevent scans every live object for locks to convert; touching
            # Django's lazy settings there would configure them mid-patch (or
            # crash when no settings module is chosen yet).
            monkey.patch_all(thread=False)
            monkey.patch_thread(existing_locks=False)
        else:
            monkey.patch_all()
    # gevent records, for every greenlet spawned, its spawner and the ten frames
    # of its spawning stack, for greenlet-tree reports the service never makes:
    # about 7 us of a spawn's 18 us, and a W1 request spawns a leg per upstream
    # call (gevent.spawn was 3.6 % of a W1 worker's CPU).
    config.track_greenlet_tree = False
    _patch_psycopg()
    _state["patched"] = True
    return True


def _patch_psycopg() -> None:
    import psycogreen.gevent
    from psycopg2 import extensions

    psycogreen.gevent.patch_psycopg()
    extensions.set_wait_callback(cancelling_wait_callback)


def cancelling_wait_callback(conn: Any, timeout: float | None = None) -> None:
    """psycogreen's wait callback, plus a server-side cancel when interrupted.

    When the waiting greenlet is killed or a ``gevent.Timeout`` fires, psycopg2
    abandons the connection client-side but the server keeps running the
    statement. Cancelling here, while the connection is still open, stops it.
    """
    import psycogreen.gevent

    try:
        psycogreen.gevent.gevent_wait_callback(conn, timeout=timeout)
    except BaseException:
        try:
            conn.cancel()
        except Exception:  # the connection may already be gone; nothing to stop
            logger.debug("cancel after interrupted wait failed", exc_info=True)
        raise


def is_patched() -> bool:
    """Return True when sockets are cooperative and psycopg2 has a green callback."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return False
    from psycopg2 import extensions

    return extensions.get_wait_callback() is not None


def warn_if_patched_late() -> None:
    """Log a warning naming the modules that were imported before patching."""
    late = _state["late_modules"]
    if late:
        logger.warning(
            "gevent patched after %s were imported; move project.green.patch() to "
            "the first line of the entry point",
            ", ".join(late),
        )
    elif patch_enabled() and not is_patched():
        logger.warning("process is not monkey-patched: every request blocks the worker")
