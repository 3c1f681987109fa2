"""Readiness: can this worker reach its database right now?"""

import logging

import gevent
from django.db import connection

from project.core.deadline import Deadline, deadline_scope
from project.core.pg_pool.errors import PoolTimeout
from project.core.sql import run_query

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 1.0
# What /readyz may say: which dependency and how, never an address or a message
# from the driver (those go to the log).
UNREACHABLE = "database unreachable"
NO_ANSWER = "database did not answer in time"


def check_database(*, timeout: float = READY_TIMEOUT_S) -> tuple[bool, str]:
    """``(ready, state)``: the database answers ``SELECT 1`` within ``timeout``.

    A pool with every connection busy is not a dead database: the worker is
    serving, its requests queue for a connection, so it stays ready
    (``state`` "busy") rather than have a balancer pull every loaded instance.
    """
    try:
        # The pool's wait is bounded by the current deadline: a full pool
        # answers PoolTimeout at ``timeout``. The outer timeout, for a connect
        # or query that hangs, is a little longer so it never wins that race.
        guard = gevent.Timeout(timeout * 1.5, TimeoutError)
        with deadline_scope(Deadline(timeout)), guard:
            run_query("SELECT 1", timeout=timeout)
    except TimeoutError:
        # The connection may be half-open after an interrupted connect; drop it.
        connection.close()
        logger.warning("readiness: %s", NO_ANSWER)
        return False, NO_ANSWER
    except Exception as exc:
        # Django wraps the pool's PoolTimeout in its own OperationalError.
        if isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout):
            logger.info("readiness: %s", exc)
            return True, "busy"
        connection.close()
        logger.warning("readiness: %s: %s", UNREACHABLE, exc)
        return False, UNREACHABLE
    return True, "ok"
