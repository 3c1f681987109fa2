"""Start the processes a load run needs on loopback, and stop exactly those.

``Processes`` is a context manager: everything started through it (stub upstream,
gunicorn with the project's ``gunicorn.conf.py``, Locust) is stopped when the
block ends, newest first, by the process handle it was started with.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self
from urllib.parse import urlencode

import requests

from loadtests.harness.paths import BASE_DIR

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


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query (a DATABASE_URL's options)."""
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(params)


def env_item(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from the command line (an argparse ``type``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_env_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--env KEY=VALUE`` (repeatable): the server environment a run overrides."""
    parser.add_argument(
        "--env",
        type=env_item,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help_text,
    )


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """DATABASE_URL, or the (started) embedded development cluster."""
    url = os.environ.get("DATABASE_URL", "")
    if url:
        return url
    from project import embedded_pg

    return embedded_pg.ensure_running()


def wait_for_http(
    url: str, process: subprocess.Popen | None = None, timeout: float = 30.0
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"exited with {process.returncode} before {url} answered"
            )
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Poll until 127.0.0.1:``port`` accepts; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def wait_until_refused(port: int, timeout: float = 10.0) -> None:
    """Poll until 127.0.0.1:``port`` refuses connections: its listener closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except ConnectionRefusedError:
            return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"127.0.0.1:{port} still accepted after {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a process we started and wait for it; SIGKILL it if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Processes:
    """The processes one command started; all stopped when the ``with`` block ends."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []
        # gunicorn masters by base URL, for callers that watch the workers.
        self.servers: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        """Stop everything started here, newest first."""
        while self.started:
            stop(self.started.pop())

    def popen(self, args: list[str], name: str, **kwargs) -> subprocess.Popen:
        """Start ``args`` (cwd: the project unless given); output, unless redirected, to
        ``<log_dir>/<name>.log`` (discarded without a log_dir)."""
        log = None
        if "stdout" not in kwargs and self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{name}.log").open("a")
        kwargs.setdefault("stdout", log or subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        try:
            process = subprocess.Popen(args, **{"cwd": BASE_DIR, **kwargs})
        finally:
            if log is not None:
                log.close()
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        """Stop one process started here."""
        stop(process)
        self.started.remove(process)

    def start_upstream(self, **popen_kwargs) -> str:
        """Start the stub upstream on a free port; return its base URL.

        ``popen_kwargs`` go to ``subprocess.Popen`` (e.g. ``process_group=0``).
        """
        process = self.popen(
            [sys.executable, "-m", "loadtests.upstream", "--port", "0"],
            "upstream",
            stdout=subprocess.PIPE,
            text=True,
            **popen_kwargs,
        )
        assert process.stdout is not None  # stdout=PIPE
        line = process.stdout.readline()
        process.stdout.close()
        match = re.search(r"http://[\d.]+:\d+", line)
        if not match:
            raise RuntimeError(f"stub upstream did not start: {line!r}")
        return match.group(0)

    def start_gunicorn(
        self,
        *,
        database_url: str,
        mode: str = "gevent",
        workers: int = 2,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        tree: Path = BASE_DIR,
    ) -> str:
        """Start gunicorn with gunicorn.conf.py in ``mode``; return its base URL.

        ``env`` overrides the environment last, so a run can break or tune the
        service on purpose (``HTTP_POOL_MAXSIZE=1``); ``args`` come after the
        mode's own (``--threads 64`` wins). ``tree`` serves another checkout of
        the project (a before/after comparison).
        """
        port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "ENVIRONMENT")
        }
        environment.update(
            # test: development's settings without its debug pages.
            ENVIRONMENT="test",
            DATABASE_URL=with_query(database_url, SERVER_MODES[mode]["query"]),
            BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY=str(workers),
            GUNICORN_ACCESS_LOG="",
            **SERVER_MODES[mode]["env"],
        )
        environment.update(env or {})
        process = self.popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                *SERVER_MODES[mode]["args"],
                *(args or []),
            ],
            f"gunicorn-{mode}",
            env=environment,
            cwd=tree,
        )
        return self._serving(port, process, "/healthz")

    def start_asyncio_baseline(self, *, upstream: str, workers: int = 2) -> str:
        """Start the asyncio baseline (uvicorn, uvloop, httptools); return its URL.

        ``upstream`` is the stub its fan-out calls. Like gunicorn's master, the
        uvicorn supervisor's children are its workers (``self.servers``).
        """
        port = free_port()
        process = self.popen(
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
        return self._serving(port, process, "/demo/fan-out/?http=1&ms=0")

    def _serving(self, port: int, process: subprocess.Popen, probe: str) -> str:
        """Wait until the server on ``port`` answers ``probe``; record it."""
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + probe, process)
        self.servers[base] = process
        return base
