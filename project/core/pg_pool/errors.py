"""Why a checkout got no connection: the pool's refusals and the server's."""

import psycopg2


class PoolTimeout(psycopg2.OperationalError):
    """No connection became free in the time the caller had.

    A psycopg2 ``OperationalError`` so that Django wraps it like any other
    failure to connect (``django.db.OperationalError``).
    """


class PoolFull(PoolTimeout):
    """The queue of waiting checkouts is already ``max_waiting`` long."""


def refusal(*, full: bool, timeout: float, waiting: int, size: int) -> PoolTimeout:
    """The error for a checkout refused at once (``full``) or after ``timeout`` s."""
    if full:
        return PoolFull(
            f"no database connection free: {waiting} requests already "
            f"waiting (pool size {size})"
        )
    return PoolTimeout(
        f"no database connection free within {timeout * 1000:.0f} ms (pool size {size})"
    )


def too_many_clients(exc: BaseException) -> bool:
    """True when the server refused a new connection because it is full."""
    # SQLSTATE 53300 arrives as a FATAL at connect time, before psycopg2 can
    # attach a pgcode, so the message is all there is.
    text = str(exc)
    return getattr(exc, "pgcode", None) == "53300" or (
        "too many clients" in text or "connection slots are reserved" in text
    )
