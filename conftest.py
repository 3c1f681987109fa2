"""Fixtures shared by the whole test suite."""

import os
import resource
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from loadtests.harness.processes import (
    Processes,
    free_port,
    wait_for_http,
    with_query,
)
from loadtests.harness.processes import stop as stop_process
from tests.redis_server import redis_server  # noqa: F401  (a fixture)

BASE_DIR = Path(__file__).resolve().parent
# Run by `make stack-test` (a whole stack of their own, about half a minute),
# not by `make test`: collected only when named on the command line.
STACK_TESTS = BASE_DIR / "tests" / "stack"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave tests/stack/ out unless a command-line path points into it."""
    if collection_path != STACK_TESTS:
        return None
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == STACK_TESTS or STACK_TESTS in path.parents:
            return None
    return True


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> Iterator[None]:
    """Start the throwaway test cluster (if used) before the test DB is created."""
    from django.conf import settings as django_settings

    from project import embedded_pg

    data_dir = django_settings.EMBEDDED_PG_DATA_DIR
    started_here = bool(data_dir) and not embedded_pg.is_running(Path(data_dir))
    if data_dir:
        embedded_pg.ensure_running(Path(data_dir), "postgres")
    yield
    if started_here:
        embedded_pg.stop(Path(data_dir))


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    """``DATABASE_URL`` of the test database, for servers started as subprocesses."""
    from django.db import connection

    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = quote(db["HOST"] or "", safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """Base URL of a real stub upstream (``loadtests.upstream``) on loopback."""
    with Processes() as processes:
        yield processes.start_upstream()


class Server:
    """A gunicorn started by the tests: its base URL, process and log file."""

    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET ``path`` on this server (10 s timeout unless given)."""
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)


@pytest.fixture(scope="session")
def start_gunicorn(
    tmp_path_factory, django_db_setup
) -> Iterator[Callable[..., Server]]:
    """Factory: start a real gunicorn with our gunicorn.conf.py; stopped at the end.

    Depends on the test database so the servers (and their pooled connections)
    are gone before it is dropped.
    """
    started: list[Server] = []

    def start(
        database_url: str,
        workers: int = 1,
        nofile: int | None = None,
        python: str = sys.executable,
        application_name: str | None = None,
        **env: str,
    ) -> Server:
        port = free_port()
        log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "DEMO_UPSTREAM_URL")
        }
        environment.update(
            ENVIRONMENT="test",
            # A name on the server's connections lets a test count them.
            DATABASE_URL=with_query(
                database_url,
                {"application_name": application_name} if application_name else {},
            ),
            BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY=str(workers),
            GUNICORN_ACCESS_LOG="",
        )
        environment.update(env)
        with log.open("w") as out:
            process = subprocess.Popen(
                [python, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=BASE_DIR,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                # ``nofile``: soft and hard RLIMIT_NOFILE, as under ``ulimit -n``.
                preexec_fn=(
                    None
                    if nofile is None
                    else lambda: resource.setrlimit(
                        resource.RLIMIT_NOFILE, (nofile, nofile)
                    )
                ),
            )
        server = Server(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        try:
            wait_for_http(server.url + "/healthz", process=process)
        except Exception as exc:
            raise RuntimeError(
                f"{exc}\n--- gunicorn log ---\n{log.read_text()}"
            ) from exc
        return server

    yield start
    for server in started:
        stop_process(server.process)


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


@pytest.fixture(scope="module")
def gunicorn_server(start_gunicorn, test_database_url, upstream) -> Server:
    """One gevent worker on the test database, HTTP legs aimed at the stub upstream."""
    return start_gunicorn(
        test_database_url,
        workers=1,
        DEMO_UPSTREAM_URL=upstream,
        application_name=LIVE_APPLICATION_NAME,
        DB_POOL_SIZE=str(POOL_SIZE),
    )


def is_shed(status: int, headers) -> bool:
    """Whether an answer is admission control's refusal (a 503 naming its reason)."""
    return status == 503 and "X-Shed-Reason" in headers


LIVE_APPLICATION_NAME = "gevent-django-live"
POOL_SIZE = 20


def pool_in_use() -> int:
    """Connections this process has checked out of its pools right now."""
    from project.core.pg_pool.base import all_pools

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
