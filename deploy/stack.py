"""The production topology on loopback: nginx, two gunicorns, PgBouncer, PostgreSQL.

``python -m deploy.stack`` (``make stack``) starts, each on a free 127.0.0.1
port, and in this order: the embedded PostgreSQL (``--pg-data``, the
development cluster by default), PgBouncer in transaction pooling mode
(``deploy/pgbouncer.ini``), the stub upstream, Redis (the aggregation cache
they share, ``REDIS_URL``), two gunicorn instances
(``gunicorn.conf.py``, standing in for two hosts) and nginx
(``deploy/nginx.conf``) in front of them. It prints the URL and runs in the
foreground until SIGINT (Ctrl-C) or SIGTERM, then stops exactly what it
started, by the handles it started them with (PostgreSQL only if it was not
already running).

Everything it started is listed in ``RUN_DIR/state.json`` (pids, ports,
paths). SIGHUP asks for a rolling restart of the instances
(``deploy/rolling-restart`` sends it and waits for the outcome in the state
file): the stack itself replaces each instance, so it keeps owning the new
processes and Ctrl-C still stops them.
"""

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploy import pgbouncer
from deploy.templates import render
from loadtests.harness.processes import (
    Processes,
    add_env_option,
    free_port,
    wait_for_http,
    wait_for_port,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DEPLOY_DIR = BASE_DIR / "deploy"
DEFAULT_RUN_DIR = BASE_DIR / ".data" / "stack"
STATE_FILE = "state.json"
AGGREGATIONS_FILE = DEPLOY_DIR / "aggregations.toml"
REDIS_MAXMEMORY = "64mb"
INSTANCES = 2
# Each instance's pool, per worker: PgBouncer's max_client_conn is the budget
# (README, Deployment), and PgBouncer's few server connections are shared.
DB_POOL_SIZE = 20
PGBOUNCER_SERVER_CONNECTIONS = 10
PGBOUNCER_MAX_CLIENT_CONN = 500
# Above REQUEST_DEADLINE_MAX_MS (60 s): the app answers its own 504 first.
PROXY_READ_TIMEOUT = "65s"
# How long a reloaded nginx's old workers get to finish what they proxy.
NGINX_DRAIN_TIMEOUT = 15.0


class StackError(RuntimeError):
    """The stack cannot start (a missing tool, a part that did not come up)."""


class Stopping(Exception):
    """SIGINT or SIGTERM arrived: unwind and stop everything."""


def find_binary(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin (Debian's nginx and pgbouncer live there)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if candidate.exists() else None


def ensure_binaries(
    names: tuple[str, ...] = ("nginx", "pgbouncer", "redis-server"),
) -> dict[str, str]:
    """The paths of ``names``; missing ones are installed with apt-get under root.

    Not root: StackError naming the packages to install.
    """
    missing = [name for name in names if find_binary(name) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"stack: installing {' '.join(missing)} (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=False,
            env=env,
        )
        missing = [name for name in names if find_binary(name) is None]
    if missing:
        raise StackError(
            f"{' and '.join(missing)} not installed: the stack needs the Debian "
            f"package(s) {' '.join(missing)} (sudo apt-get install {' '.join(missing)})"
        )
    return {name: find_binary(name) or name for name in names}


def raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one, for us and every child (nginx's
    workers set their own with worker_rlimit_nofile)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def children(pid: int) -> set[int]:
    """The pids of a process's children (from /proc; empty once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(child) for child in text.split()}


class Stack:
    """The processes of one stack and how to start, restart and stop them."""

    def __init__(
        self,
        run_dir: Path = DEFAULT_RUN_DIR,
        *,
        port: int = 0,
        pg_data: Path | None = None,
        database: str = "app",
        workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.log_dir = self.run_dir / "logs"
        self.port = port or free_port()
        self.pg_data = pg_data.resolve() if pg_data else None
        self.database = database
        self.workers = workers
        self.env = env or {}
        self.processes = Processes(self.log_dir)
        self.binaries: dict[str, str] = {}
        self.pg_started_here = False
        self.pgbouncer_port = 0
        self.database_url = ""
        self.upstream_url = ""
        self.redis_url = ""
        # The bearer token of the aggregation API (deploy/aggregations.toml).
        self.aggregation_token = secrets.token_urlsafe(24)
        self.instance_ports = [free_port() for _ in range(INSTANCES)]
        self.instances: list[subprocess.Popen | None] = [None] * INSTANCES
        self.nginx: subprocess.Popen | None = None
        self.pgbouncer: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None
        self.upstream: subprocess.Popen | None = None
        self._db: dict[str, Any] = {}
        self.restarts = 0
        self.last_restart: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        """nginx's base URL: the stack's front door."""
        return f"http://127.0.0.1:{self.port}"

    # Starting

    def start(self) -> None:
        """Start every part, in dependency order; write the state file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        raise_nofile_limit()
        self.binaries = ensure_binaries()
        self._start_postgres()
        self._start_pgbouncer()
        self.upstream_url = self.processes.start_upstream(process_group=0)
        self.upstream = self.processes.started[-1]
        self._start_redis()
        for index in range(INSTANCES):
            self.start_instance(index)
        self._start_nginx()
        self.write_state("running")

    def _start_postgres(self) -> None:
        from project import embedded_pg

        data = self.pg_data or embedded_pg.DEV_DATA_DIR
        self.pg_started_here = not embedded_pg.is_running(data)
        direct_url = embedded_pg.ensure_running(data, self.database)
        # Migrations straight to PostgreSQL, not through transaction pooling.
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=BASE_DIR,
            env={**self._base_env(), "DATABASE_URL": direct_url},
            check=True,
        )
        self._db = {
            "NAME": self.database,
            "HOST": str(embedded_pg.socket_dir(data)),
            "PORT": embedded_pg.PORT,
            "USER": embedded_pg.SUPERUSER,
            "PASSWORD": embedded_pg.password(data),
        }

    def _start_pgbouncer(self) -> None:
        self.pgbouncer_port = free_port()
        config = pgbouncer.write_config(
            self.run_dir,
            port=self.pgbouncer_port,
            db=self._db,
            pool_size=PGBOUNCER_SERVER_CONNECTIONS,
            max_client_conn=PGBOUNCER_MAX_CLIENT_CONN,
        )
        process = pgbouncer.start(
            self.binaries["pgbouncer"],
            config,
            self.log_dir / "pgbouncer.log",
            process_group=0,
        )
        self.processes.started.append(process)
        self.pgbouncer = process
        self.database_url = pgbouncer.client_url(self.pgbouncer_port, self._db)

    def _start_redis(self) -> None:
        """Redis (deploy/redis.conf) for the aggregation cache the instances share."""
        port = free_port()
        config = self.run_dir / "redis.conf"
        config.write_text(
            render(
                (DEPLOY_DIR / "redis.conf").read_text(),
                port=str(port),
                run_dir=str(self.run_dir),
                maxmemory=REDIS_MAXMEMORY,
            )
        )
        process = self.processes.popen(
            [self.binaries["redis-server"], str(config)], "redis", process_group=0
        )
        self.redis = process
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        wait_for_port(port, process)

    def _base_env(self) -> dict[str, str]:
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "ENVIRONMENT")
        }
        environment.update(ENVIRONMENT="development", DEBUG="false")
        return environment

    def instance_env(self, index: int) -> dict[str, str]:
        """The environment of instance ``index``: the database through PgBouncer."""
        environment = self._base_env()
        environment.update(
            DATABASE_URL=self.database_url,
            DB_DISABLE_SERVER_SIDE_CURSORS="true",
            DB_POOL_SIZE=str(DB_POOL_SIZE),
            DEMO_UPSTREAM_URL=self.upstream_url,
            BIND=f"127.0.0.1:{self.instance_ports[index]}",
            WEB_CONCURRENCY=str(self.workers),
            GUNICORN_ACCESS_LOG="-",
            REDIS_URL=self.redis_url,
            AGGREGATIONS_FILE=str(AGGREGATIONS_FILE),
            AGGREGATION_API_TOKENS=self.aggregation_token,
        )
        environment.update(self.env)
        return environment

    def start_instance(self, index: int) -> None:
        """Start gunicorn instance ``index`` on its port; return when /readyz is 200."""
        process = self.processes.popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
            # nginx on 127.0.0.1 may set X-Forwarded-Proto/-For (gunicorn's
            # default too, stated): the access log then names the client.
            + ["--forwarded-allow-ips", "127.0.0.1"],
            f"app{index + 1}",
            env=self.instance_env(index),
            process_group=0,
        )
        self.instances[index] = process
        wait_for_http(f"http://127.0.0.1:{self.instance_ports[index]}/readyz", process)

    def _start_nginx(self) -> None:
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.run_dir / "tmp" / name).mkdir(parents=True, exist_ok=True)
        self.write_nginx_config()
        self.nginx = self.processes.popen(
            [self.binaries["nginx"], *self._nginx_paths(), "-g", "daemon off;"],
            "nginx",
            process_group=0,
        )
        wait_for_http(self.url + "/healthz", self.nginx, timeout=10)

    def _nginx_paths(self) -> list[str]:
        run = str(self.run_dir)
        return ["-p", run, "-c", f"{run}/nginx.conf", "-e", f"{run}/nginx-error.log"]

    def write_nginx_config(self, down: frozenset[int] = frozenset()) -> None:
        """Render deploy/nginx.conf into the run dir, ``down`` instances marked so."""
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s"
            + (" down" if index in down else "")
            + ";"
            for index, port in enumerate(self.instance_ports)
        )
        text = render(
            (DEPLOY_DIR / "nginx.conf").read_text(),
            user_line="user root;" if os.geteuid() == 0 else "",
            worker_processes="2",
            run_dir=str(self.run_dir),
            servers=servers,
            port=str(self.port),
            read_timeout=PROXY_READ_TIMEOUT,
        )
        (self.run_dir / "nginx.conf").write_text(text)

    # Rolling restart

    def reload_nginx(self, down: frozenset[int] = frozenset()) -> None:
        """Rewrite nginx.conf, check it, reload (SIGHUP); return once the old
        workers, which finish what they were proxying, are gone."""
        assert self.nginx is not None
        self.write_nginx_config(down)
        subprocess.run(
            [self.binaries["nginx"], *self._nginx_paths(), "-t", "-q"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        old_workers = children(self.nginx.pid)
        self.nginx.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + NGINX_DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            current = children(self.nginx.pid)
            if current and not current & old_workers:
                return
            time.sleep(0.05)

    def rolling_restart(self) -> None:
        """Replace the instances one at a time, none failing a request: take it
        out of nginx, stop it gracefully (SIGTERM: in-flight requests finish),
        start it again, wait for its /readyz, put it back."""
        started = time.monotonic()
        for index in range(INSTANCES):
            self.reload_nginx(down=frozenset({index}))
            process = self.instances[index]
            # One that died (kill -9) was reaped already: just start it again.
            if process is not None and process in self.processes.started:
                self.processes.stop(process)
            self.start_instance(index)
            self.reload_nginx()
            self.write_state("restarting")
        self.restarts += 1
        self.last_restart = {
            "ok": True,
            "error": None,
            "seconds": round(time.monotonic() - started, 2),
        }

    def reap(self) -> list[str]:
        """Names of the processes that exited on their own since the last call
        (reaped, reported, left down: an instance killed on purpose stays dead
        until the next rolling restart starts it again)."""
        named = [(f"app{i + 1}", p) for i, p in enumerate(self.instances)]
        named += [("nginx", self.nginx), ("pgbouncer", self.pgbouncer)]
        named += [("upstream", self.upstream), ("redis", self.redis)]
        gone = []
        for name, process in named:
            if process is not None and process in self.processes.started:
                if process.poll() is not None:
                    self.processes.started.remove(process)
                    print(f"stack: {name} exited ({process.returncode})", flush=True)
                    gone.append(name)
        return gone

    # Stopping

    def stop(self) -> None:
        """Stop what this stack started: nginx first (no new requests), then the
        instances (gracefully), then the rest, newest first."""
        if self.nginx is not None and self.nginx in self.processes.started:
            self.processes.stop(self.nginx)
        for process in self.instances:
            if process is not None and process in self.processes.started:
                self.processes.stop(process)
        self.processes.stop_all()
        if self.pg_started_here:
            from project import embedded_pg

            embedded_pg.stop(self.pg_data or embedded_pg.DEV_DATA_DIR)
            self.pg_started_here = False
        self.write_state("stopped")

    # State

    def state(self, status: str) -> dict[str, Any]:
        """What runs where: the content of the state file."""

        def pid(process: subprocess.Popen | None) -> int | None:
            return (
                process.pid if process is not None and process.poll() is None else None
            )

        return {
            "status": status,
            "pid": os.getpid(),
            "url": self.url,
            "run_dir": str(self.run_dir),
            "nginx": {
                "pid": pid(self.nginx),
                "port": self.port,
                "config": str(self.run_dir / "nginx.conf"),
                "access_log": str(self.run_dir / "nginx-access.log"),
                "error_log": str(self.run_dir / "nginx-error.log"),
            },
            "instances": [
                {
                    "name": f"app{index + 1}",
                    "pid": pid(process),
                    "port": self.instance_ports[index],
                    "url": f"http://127.0.0.1:{self.instance_ports[index]}",
                    "log": str(self.log_dir / f"app{index + 1}.log"),
                }
                for index, process in enumerate(self.instances)
            ],
            "pgbouncer": {
                "pid": pid(self.pgbouncer),
                "port": self.pgbouncer_port,
                "database_url": self.database_url,
                "config": str(self.run_dir / "pgbouncer.ini"),
                "log": str(self.log_dir / "pgbouncer.log"),
            },
            "upstream": {"pid": pid(self.upstream), "url": self.upstream_url},
            "redis": {"pid": pid(self.redis), "url": self.redis_url},
            "aggregation_token": self.aggregation_token,
            "postgres": {
                "data_dir": str(self.pg_data)
                if self.pg_data
                else "development cluster",
                "database": self.database,
                "started_here": self.pg_started_here,
            },
            "restarts": self.restarts,
            "last_restart": self.last_restart,
        }

    def write_state(self, status: str) -> None:
        """Write the state file atomically (readers never see half of it)."""
        path = self.run_dir / STATE_FILE
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.state(status), indent=2) + "\n")
        partial.replace(path)


def running_stack(run_dir: Path) -> int | None:
    """The pid of a stack still running from ``run_dir``, per its state file."""
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if state.get("status") == "stopped" or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def serve(stack: Stack) -> None:
    """Start ``stack``, then wait for signals: SIGHUP restarts the instances one
    by one, SIGINT/SIGTERM stop everything (also halfway through a start)."""
    restart_requested = False

    def on_stop(signum: int, frame: object) -> None:
        raise Stopping(signal.Signals(signum).name)

    def on_hup(signum: int, frame: object) -> None:
        nonlocal restart_requested
        restart_requested = True

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        stack.start()
        print(f"stack: {stack.url} (state in {stack.run_dir / STATE_FILE})", flush=True)
        while True:
            if restart_requested:
                restart_requested = False
                print("stack: rolling restart", flush=True)
                try:
                    stack.rolling_restart()
                except (Stopping, KeyboardInterrupt):
                    raise
                except Exception as exc:  # reported to rolling-restart, stack stays up
                    stack.restarts += 1
                    stack.last_restart = {
                        "ok": False,
                        "error": repr(exc),
                        "seconds": None,
                    }
                stack.write_state("running")
                print(f"stack: rolling restart done: {stack.last_restart}", flush=True)
            if stack.reap():
                stack.write_state("running")
            time.sleep(0.1)
    except Stopping as exc:
        print(f"stack: {exc}, stopping", flush=True)
    finally:
        # A second Ctrl-C must not cut the stop short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stack: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m deploy.stack [--run-dir DIR] [--port N] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument(
        "--port", type=int, default=0, help="nginx's port (default: a free one)"
    )
    parser.add_argument(
        "--pg-data",
        type=Path,
        default=None,
        help="embedded PostgreSQL data dir (default: the development cluster)",
    )
    parser.add_argument("--database", default="app")
    parser.add_argument(
        "--workers", type=int, default=1, help="gevent workers per instance"
    )
    add_env_option(parser, "environment of the instances (repeatable)")
    args = parser.parse_args(argv)
    other = running_stack(args.run_dir)
    if other is not None:
        print(
            f"stack: already running from {args.run_dir} (pid {other})", file=sys.stderr
        )
        return 1
    stack = Stack(
        args.run_dir,
        port=args.port,
        pg_data=args.pg_data,
        database=args.database,
        workers=args.workers,
        env=dict(args.env),
    )
    try:
        serve(stack)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
