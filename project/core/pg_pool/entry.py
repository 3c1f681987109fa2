"""One pooled connection and what the pool knows of it."""

import random
import time
import weakref
from dataclasses import dataclass
from typing import Any

from .log import logger

_LIFETIME_JITTER = 0.05  # up to 5 % earlier, so connections do not all expire at once


@dataclass(eq=False)
class Entry:
    """One open connection: when it expires, since when it is idle, who holds it."""

    connection: Any
    expires: float
    idle_since: float = 0.0
    owner: weakref.ref[Any] | None = None  # the greenlet (or thread) holding it
    # Where it was checked out: (file, line, function) of up to three frames.
    site: tuple[tuple[str, int, str], ...] = ()

    @classmethod
    def new(cls, connection: Any, max_lifetime: float) -> "Entry":
        """A connection just opened, expiring after about ``max_lifetime`` s."""
        jitter = 1 - _LIFETIME_JITTER * random.random()
        return cls(connection, time.monotonic() + max_lifetime * jitter)


def close_quietly(connection: Any) -> None:
    """Close ``connection``; a failure (it is gone already) is only logged."""
    try:
        connection.close()
    except Exception:
        logger.debug("closing a pooled connection failed", exc_info=True)
