"""The one way the tests, the load tests and the stack start the service:
gunicorn with the project's ``gunicorn.conf.py``, on loopback, ready when it
answers, stopped with the ``Processes`` that started it."""

import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from devtools.ports import free_port, wait_for_http
from devtools.processes import BASE_DIR, Processes

# What selects the settings, and where the demo's HTTP legs go: a server gets
# them from whoever starts it, never from the shell that ran the command.
NOT_INHERITED = ("DJANGO_SETTINGS_MODULE", "ENVIRONMENT", "DEMO_UPSTREAM_URL")


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to its query (a DATABASE_URL's options)."""
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(params)


class Server:
    """A started gunicorn: its base URL, its master process and its log file."""

    def __init__(self, url: str, process: subprocess.Popen, log: Path | None) -> None:
        self.url = url
        self.process = process
        self.log = log

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET ``path`` on this server (10 s timeout unless given)."""
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)


def start_gunicorn(
    processes: Processes,
    *,
    environment: str,
    database_url: str,
    application_name: str | None = None,
    workers: int = 1,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    name: str = "gunicorn",
    ready: str = "/healthz",
    python: str = sys.executable,
    tree: Path = BASE_DIR,
    inherit: Mapping[str, str] | None = None,
    nofile: int | None = None,
    **popen_kwargs: Any,
) -> Server:
    """Start gunicorn through ``processes``; return it once ``ready`` answers 200.

    The server runs settings ``environment`` on ``database_url`` with ``workers``
    workers on 127.0.0.1:``port`` (a free one unless given), without an access
    log; ``application_name`` goes on its connections (DATABASE_URL's query),
    so a caller can count them in ``pg_stat_activity``. Its environment is
    ``inherit`` (the OS environment unless given) less ``NOT_INHERITED``, then
    those, then ``env``, so a caller can break or tune the service on purpose
    (``HTTP_POOL_MAXSIZE=1``). ``args`` follow ``-c gunicorn.conf.py``; its
    output goes to ``processes.log_path(name)``.
    ``python`` and ``tree`` run another interpreter or checkout of the project
    (a before/after comparison); ``nofile`` sets the soft and hard
    RLIMIT_NOFILE, as ``ulimit -n`` does; ``popen_kwargs`` go to
    ``subprocess.Popen`` (a user to run as, a process group). Raises
    RuntimeError, with the log, when it exits or does not answer in 30 s.
    """
    port = port or free_port()
    environ = {
        key: value
        for key, value in (os.environ if inherit is None else inherit).items()
        if key not in NOT_INHERITED
    }
    environ.update(
        ENVIRONMENT=environment,
        DATABASE_URL=with_query(
            database_url,
            {"application_name": application_name} if application_name else {},
        ),
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=str(workers),
        GUNICORN_ACCESS_LOG="",
    )
    environ.update(env or {})
    if nofile is not None:
        popen_kwargs["preexec_fn"] = lambda: resource.setrlimit(
            resource.RLIMIT_NOFILE, (nofile, nofile)
        )
    log = processes.log_path(name)
    log_start = log.stat().st_size if log is not None and log.exists() else 0
    process = processes.popen(
        [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args],
        name,
        env=environ,
        cwd=tree,
        **popen_kwargs,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for_http(server.url + ready, process)
        if log is not None:
            wait_for_workers(log, log_start, workers, process)
    except (RuntimeError, TimeoutError) as exc:
        output = server.log.read_text() if server.log else "(not kept)"
        raise RuntimeError(f"gunicorn {exc}\n--- its output ---\n{output}") from exc
    processes.servers[server.url] = process
    return server


# What gunicorn.conf.py's post_worker_init logs once a worker serves.
_WORKER_READY = re.compile(r"gevent worker (\d+) ready")


def wait_for_workers(
    log: Path,
    start: int,
    workers: int,
    process: subprocess.Popen,
    timeout: float = 30.0,
) -> None:
    """Wait until ``workers`` workers have logged that they are ready in
    ``log`` (from byte ``start``); fail early if ``process`` exits.

    The first worker answers while the others may still be starting, and
    whoever connects then lands on it: wrk's 100 connections, opened as a
    2-worker server first answered, all went to one worker in 3 of 6 runs and
    stayed there (W2 served 565 req/s instead of 1,150), and each run's
    figures depended on that race instead of the server.
    """
    deadline = time.monotonic() + timeout
    while True:
        with log.open("rb") as output:
            output.seek(start)
            text = output.read().decode(errors="replace")
        if len(set(_WORKER_READY.findall(text))) >= workers:
            return
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before its workers")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers not ready within {timeout} s")
        time.sleep(0.05)
