"""Fixtures shared by the whole test suite, and its collection hook."""

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import devtools.gunicorn
from devtools.gunicorn import Server
from devtools.processes import Processes
from tests.helpers import (
    CONTAINER_TESTS,
    LIVE_APPLICATION_NAME,
    STACK_TESTS,
)
from tests.redis_server import redis_server  # noqa: F401  (a fixture)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave tests/stack/ and tests/containers/ out unless a command-line path
    points into them."""
    if collection_path not in (STACK_TESTS, CONTAINER_TESTS):
        return None
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == collection_path or collection_path in path.parents:
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
    """Base URL of a real stub upstream (``devtools.upstream``) on loopback."""
    with Processes() as processes:
        yield processes.start_upstream()


@pytest.fixture(scope="session")
def start_gunicorn(
    tmp_path_factory, django_db_setup
) -> Iterator[Callable[..., Server]]:
    """Factory: start a real gunicorn in test settings; all stopped at the end.

    Depends on the test database so the servers (and their pooled connections)
    are gone before it is dropped.
    """
    with Processes(tmp_path_factory.mktemp("gunicorn")) as processes:

        def start(
            database_url: str,
            workers: int = 1,
            nofile: int | None = None,
            python: str = sys.executable,
            application_name: str | None = None,
            **env: str,
        ) -> Server:
            return devtools.gunicorn.start_gunicorn(
                processes,
                environment="test",
                database_url=database_url,
                application_name=application_name,
                workers=workers,
                env=env,
                name=f"gunicorn-{len(processes.started) + 1}",
                python=python,
                nofile=nofile,
            )

        yield start


@pytest.fixture(scope="module")
def gunicorn_server(start_gunicorn, test_database_url, upstream) -> Server:
    """One gevent worker on the test database, HTTP legs aimed at the stub upstream."""
    return start_gunicorn(
        test_database_url,
        workers=1,
        DEMO_UPSTREAM_URL=upstream,
        application_name=LIVE_APPLICATION_NAME,
    )
