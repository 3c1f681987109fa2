"""Does a worker's worst case fit its file-descriptor limit?

A gevent worker holds one descriptor per client connection (up to
``WORKER_CONNECTIONS``), per pooled upstream socket (up to
``HTTP_POOL_MAXSIZE`` per upstream) and per database connection. When they do
not fit ``RLIMIT_NOFILE`` the worker fails under load in ways that are hard to
read ("Too many open files" from accept, connect or open). gunicorn.conf.py
raises the soft limit to the hard one at start; this module says, with the
numbers, when even that is not enough.
"""

import logging
import resource

logger = logging.getLogger(__name__)

# Log files, the listening socket, the loop's own descriptors, the odd open().
RESERVE = 64
_warned: set[int] = set()


def raise_soft_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard one where allowed; return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # e.g. a container that forbids it: check() will say so
    return soft, hard


def default_http_pool_size(worker_connections: int) -> int:
    """Sockets per upstream per worker when ``HTTP_POOL_MAXSIZE`` is unset.

    One per concurrent request (``WORKER_CONNECTIONS``), so a full worker can
    call each upstream at once; under a low descriptor limit, half of what the
    limit leaves after the client connections and the reserve (at least 16),
    so upstream sockets alone cannot starve accept().
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return worker_connections
    headroom = (soft - worker_connections - RESERVE) // 2
    return max(16, min(worker_connections, headroom))


def shortfall(
    *, client_connections: int, http_pool: int, upstreams: int, db_pool: int
) -> str | None:
    """A message naming the numbers when the worst case exceeds the limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = client_connections + http_pool * upstreams + db_pool + RESERVE
    if soft == resource.RLIM_INFINITY or need <= soft:
        return None
    return (
        f"a worker may need {need} file descriptors ({client_connections} client "
        f"connections + {upstreams} upstream(s) x {http_pool} pooled sockets + "
        f"{db_pool} database connections + {RESERVE} reserve) but RLIMIT_NOFILE "
        f"is {soft}: raise it (ulimit -n, systemd LimitNOFILE=) or lower "
        "WORKER_CONNECTIONS / HTTP_POOL_MAXSIZE; past the limit calls are shed "
        "with 503 until sockets free up"
    )


def check(upstreams: int) -> None:
    """Warn once per worst case when this worker's descriptors may run out."""
    from django.conf import settings

    from .pg_pool.pools import all_pools

    configured = sum(
        database.get("OPTIONS", {}).get("pool_size") or 0
        for database in settings.DATABASES.values()
    )
    opened = sum(pool.size for pool in all_pools().values())
    message = shortfall(
        client_connections=settings.WORKER_CONNECTIONS,
        http_pool=settings.HTTP_POOL_MAXSIZE,
        upstreams=upstreams,
        db_pool=max(configured, opened),
    )
    if message is not None and upstreams not in _warned:
        _warned.add(upstreams)
        logger.warning(message)
