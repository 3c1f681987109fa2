"""What the tests share besides fixtures: constants, the production environment
of a server on loopback, and probes of the database, sockets and processes."""

import os
import secrets
from pathlib import Path

from devtools.gunicorn import Server

BASE_DIR = Path(__file__).resolve().parent.parent
# Run by `make stack-test` (a whole stack of their own, about half a minute),
# not by `make test`: collected only when named on the command line.
STACK_TESTS = BASE_DIR / "tests" / "stack"
# Run by `make image-test` and `make kube-test` (they build and run the image).
CONTAINER_TESTS = BASE_DIR / "tests" / "containers"
# The live servers' database application_name (gunicorn_server).
LIVE_APPLICATION_NAME = "gevent-django-live"
# The pool size of the live servers that set one (DB_POOL_SIZE) to test it.
POOL_SIZE = 20


def production_env(upstream: str, token: str) -> dict[str, str]:
    """The environment of a production-mode server on loopback: every demo and
    aggregation endpoint on, the example registry's upstreams at ``upstream``."""
    return {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DEMO_ENDPOINTS": "true",
        "DEMO_UPSTREAM_URL": upstream,
        "AGGREGATIONS_FILE": str(BASE_DIR / "examples" / "aggregations.toml"),
        "AGGREGATION_API_TOKENS": token,
        "CATALOG_URL": upstream,
        "REVIEWS_URL": upstream,
    }


def is_shed(status: int, headers) -> bool:
    """Whether an answer is admission control's refusal (a 503 naming its reason)."""
    return status == 503 and "X-Shed-Reason" in headers


def pool_in_use() -> int:
    """Connections this process has checked out of its pools right now."""
    from project.core.pg_pool.pools import all_pools

    return sum(pool.stats.in_use for pool in all_pools().values())


def app_backends(
    application_name: str = LIVE_APPLICATION_NAME, state: str = "%"
) -> int:
    """Count PostgreSQL backends opened by the service (by application_name).

    ``state`` filters on ``pg_stat_activity.state`` (a LIKE pattern).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        # pg_stat_activity is cached for the rest of a transaction otherwise.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()"
            " AND coalesce(state, '') LIKE %s",
            [application_name, state],
        )
        return cursor.fetchone()[0]


def socket_count(pid: int | str = "self") -> int:
    """Open sockets of a process (this one by default), from /proc."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(
        os.readlink(fd).startswith("socket:") for fd in fds.iterdir() if fd.exists()
    )


def worker_pid(server: Server) -> int:
    """The pid of the (first) worker of a gunicorn started by the tests."""
    pid = server.process.pid
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
