"""The servers a load run measures, each started through a ``devtools``
``Processes`` so it is stopped with the run: gunicorn in a worker model
(``devtools.gunicorn``, the starter the tests and the stack use too), the
asyncio baseline, the floor of W1 and the psycopg 3 rival of W2; and the
database they serve from."""

import os
import sys
from pathlib import Path

from devtools.gunicorn import start_gunicorn, with_query
from devtools.ports import free_port, wait_for_http
from devtools.processes import BASE_DIR, Processes
from loadtests.harness.pg3pool_venv import ensure_venv

# Extra gunicorn arguments, environment and DATABASE_URL query per worker
# model. gthread is the threaded baseline: Django's own backend, one connection
# per thread kept open.
SERVER_MODES: dict[str, dict] = {
    "gevent": {"args": [], "env": {}, "query": {}},
    "gthread": {
        "args": ["--worker-class", "gthread", "--threads", "32"],
        "env": {"GEVENT_PATCH": "0", "DB_POOL_SIZE": "0"},
        "query": {"conn_max_age": "60"},
    },
}


def database_url() -> str:
    """DATABASE_URL, or the (started) embedded development cluster."""
    url = os.environ.get("DATABASE_URL", "")
    if url:
        return url
    from project import embedded_pg

    return embedded_pg.ensure_running()


def start_server(
    processes: Processes,
    *,
    database_url: str,
    mode: str = "gevent",
    workers: int = 2,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    tree: Path = BASE_DIR,
) -> str:
    """Start gunicorn in ``mode`` (test settings: development's without its
    debug pages); return its base URL.

    ``env`` overrides the environment last, so a run can break or tune the
    service on purpose (``HTTP_POOL_MAXSIZE=1``); ``args`` come after the
    mode's own (``--threads 64`` wins). ``tree`` serves another checkout of
    the project (a before/after comparison).
    """
    return start_gunicorn(
        processes,
        environment="test",
        database_url=with_query(database_url, SERVER_MODES[mode]["query"]),
        workers=workers,
        env={**SERVER_MODES[mode]["env"], **(env or {})},
        args=[*SERVER_MODES[mode]["args"], *(args or [])],
        name=f"gunicorn-{mode}",
        tree=tree,
    ).url


def start_asyncio_baseline(
    processes: Processes, *, upstream: str, workers: int = 2
) -> str:
    """Start the asyncio baseline (uvicorn, uvloop, httptools); return its URL.

    ``upstream`` is the stub its fan-out calls. Like gunicorn's master, the
    uvicorn supervisor's children are its workers (``processes.servers``).
    """
    port = free_port()
    process = processes.popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "loadtests.asyncio_baseline.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--backlog",
            "4096",
        ],
        "uvicorn-asyncio",
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "loadtests.asyncio_baseline.settings",
            "DEMO_UPSTREAM_URL": upstream,
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/demo/fan-out/?http=1&ms=0", process)
    processes.servers[base] = process
    return base


# The rivals' gunicorn (the floor, pg3pool): the service's defaults
# (gunicorn.conf.py) for what bounds throughput, under gunicorn's stock gevent
# worker.
FLOOR_WORKER_CONNECTIONS = 1000
FLOOR_BACKLOG = 2048
FLOOR_KEEPALIVE_S = 5


def _start_stock_gevent(
    processes: Processes,
    *,
    python: str,
    package: str,
    app: str,
    probe: str,
    workers: int,
    env: dict[str, str],
) -> str:
    """Start ``package``'s WSGI ``app`` under gunicorn's stock gevent worker with
    ``package`` as its (empty) config; wait until it answers ``probe``; return
    its URL."""
    port = free_port()
    process = processes.popen(
        [
            python,
            "-m",
            "gunicorn",
            "--worker-class",
            "gevent",
            "--workers",
            str(workers),
            "--worker-connections",
            str(FLOOR_WORKER_CONNECTIONS),
            "--backlog",
            str(FLOOR_BACKLOG),
            "--keep-alive",
            str(FLOOR_KEEPALIVE_S),
            "--bind",
            f"127.0.0.1:{port}",
            # Not the service's gunicorn.conf.py, which gunicorn would load from
            # the working directory: no hooks, no logger, no recycling.
            "--config",
            f"python:{package}",
            # gunicorn's default control socket is one per user: a second
            # gunicorn on the host would take it over. Nothing steers a rival.
            "--no-control-socket",
            f"{package}.{app}",
        ],
        f"gunicorn-{package.rsplit('.', 1)[-1]}",
        env={**os.environ, **env},
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + probe, process)
    processes.servers[base] = process
    return base


def start_floor(processes: Processes, *, upstream: str, workers: int = 2) -> str:
    """Start the floor of W1 (``loadtests/floor``) under gunicorn's stock gevent
    worker; return its URL. ``upstream`` is the stub its fan-out calls."""
    return _start_stock_gevent(
        processes,
        python=sys.executable,
        package="loadtests.floor",
        app="app:application",
        probe="/demo/fan-out/?http=1&ms=0",
        workers=workers,
        env={
            "DEMO_UPSTREAM_URL": upstream,
            "WORKER_CONNECTIONS": str(FLOOR_WORKER_CONNECTIONS),
        },
    )


def start_refusing(processes: Processes) -> str:
    """Start one worker of the floor's canned 503 (``loadtests/floor``,
    ``refusing``) under gunicorn's stock gevent worker; return its URL."""
    return _start_stock_gevent(
        processes,
        python=sys.executable,
        package="loadtests.floor",
        app="app:refusing",
        probe="/healthz",
        workers=1,
        env={},
    )


def start_pg3pool(
    processes: Processes,
    *,
    database_url: str,
    pool_size: int,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> str:
    """Start the psycopg 3 rival of W2 (``loadtests/pg3pool``: Django's own pool
    of ``pool_size`` connections a worker) under gunicorn's stock gevent worker,
    from its own venv (built first if needed); return its URL.

    The same worker connections, backlog and keep-alive as the floor: the
    service's defaults. ``env`` comes last."""
    return _start_stock_gevent(
        processes,
        python=str(ensure_venv()),
        package="loadtests.pg3pool",
        app="wsgi:application",
        probe="/demo/slow-sql/?x=1&ms=0",
        workers=workers,
        env={
            # The caller's may name the service's settings.
            "DJANGO_SETTINGS_MODULE": "loadtests.pg3pool.settings",
            "DATABASE_URL": database_url,
            "DB_POOL_SIZE": str(pool_size),
            **(env or {}),
        },
    )
