"""The production topology on loopback: nginx, two gunicorns, PgBouncer, PostgreSQL.

``python -m deploy.stack`` (``make stack``) starts, each on a free 127.0.0.1
port, and in this order: the stub upstream, the embedded PostgreSQL
(``--pg-data``, the development cluster by default) with a role of the
service's own, PgBouncer in transaction pooling mode (``deploy/pgbouncer.ini``),
Redis (the aggregation cache they share, ``REDIS_URL``), two gunicorn
instances (``gunicorn.conf.py``, standing in for two hosts) and nginx
(``deploy/nginx.conf``) in front of them. It prints the URL and runs in the
foreground until SIGINT (Ctrl-C) or SIGTERM, then stops exactly what it
started, by the handles it started them with (PostgreSQL only if it was not
already running).

As an operator would deploy it: production settings, every password and
token generated at start, and least privilege (``deploy/privileges.py``):
under root every service runs as an unprivileged system user, and the run
dir is closed to everyone else.

Everything it started is listed in ``RUN_DIR/state.json`` (pids, ports,
paths, and the secrets: 0600). SIGHUP asks for a rolling restart of the
instances (``deploy/rolling-restart`` sends it and waits for the outcome in
the state file): the stack itself replaces each instance, so it keeps owning
the new processes and Ctrl-C still stops them.
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
from urllib.parse import quote

from deploy import database, pgbouncer
from deploy.privileges import (
    Account,
    closed_directory,
    private_log,
    service_account,
    unusable_interpreter,
    write_private,
)
from deploy.templates import render
from devtools.cli import add_env_option
from devtools.gunicorn import start_gunicorn, with_query
from devtools.ports import free_port, wait_for_http, wait_for_port, wait_until_refused
from devtools.processes import Processes

BASE_DIR = Path(__file__).resolve().parent.parent
DEPLOY_DIR = BASE_DIR / "deploy"
DEFAULT_RUN_DIR = BASE_DIR / ".data" / "stack"
STATE_FILE = "state.json"
AGGREGATIONS_FILE = DEPLOY_DIR / "aggregations.toml"
REDIS_MAXMEMORY = "64mb"
INSTANCES = 2
# Each instance's pool, per worker: PgBouncer's max_client_conn is the budget
# (deploy/README.md), and PgBouncer's few server connections are shared.
DB_POOL_SIZE = 20
PGBOUNCER_SERVER_CONNECTIONS = 10
PGBOUNCER_MAX_CLIENT_CONN = 500
# Above project.core.deadline.MAX_DEADLINE_MS (60 s): the app answers its
# own 504 first.
PROXY_READ_TIMEOUT = "65s"
# nginx takes an instance out for this long after a request it could not
# deliver there (and sends that request to the other one).
FAIL_TIMEOUT_S = 2
# What nginx passes on as Host (its clients' own): the instances accept these.
ALLOWED_HOSTS = "127.0.0.1,localhost"


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
        demo: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        # The runner's own files (configurations, state, the services' output)
        # are in run_dir and logs/; what the services write is in var/.
        self.log_dir = self.run_dir / "logs"
        self.var_dir = self.run_dir / "var"
        self.port = port or free_port()
        self.pg_data = pg_data.resolve() if pg_data else None
        self.database = database
        self.workers = workers
        self.demo = demo
        self.env = env or {}
        self.account = Account("", -1, -1)  # the services' user, known at start
        self.processes = Processes(self.log_dir)
        self.binaries: dict[str, str] = {}
        self.pg_started_here = False
        self.pgbouncer_port = 0
        self.database_url = ""
        self.upstream_url = ""
        self.redis_url = ""
        # The bearer token of the aggregation API (deploy/aggregations.toml).
        self.aggregation_token = secrets.token_urlsafe(24)
        self.metrics_token = secrets.token_urlsafe(24)
        self.secret_key = secrets.token_urlsafe(48)  # 64 characters
        self.redis_password = secrets.token_urlsafe(24)
        self.db_password = secrets.token_urlsafe(24)
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
        self.account = service_account()
        problem = unusable_interpreter(self.account, BASE_DIR)
        if problem:
            raise StackError(
                f"the services run as {self.account.name}, who cannot run this "
                f"project: {problem}. Give that user read access, or build the "
                "virtualenv from a Python it can run (make install PYTHON=...)"
            )
        self._make_run_dir()
        raise_nofile_limit()
        self.binaries = ensure_binaries()
        private_log(self.log_dir / "upstream.log")
        self.upstream_url = self.processes.start_upstream(**self._as_service())
        self.upstream = self.processes.started[-1]
        self._start_postgres()
        self._start_pgbouncer()
        self._start_redis()
        for index in range(INSTANCES):
            self.start_instance(index)
        self._start_nginx()
        self.write_state("running")

    def _as_service(self) -> dict[str, Any]:
        """``Popen`` arguments of a service: its user, its own process group
        (Ctrl-C reaches the runner alone, which stops each in order)."""
        return {**self.account.popen_kwargs(), "process_group": 0}

    def _make_run_dir(self) -> None:
        """The run dir: the runner's (0700), entered by the services' group
        under root (0710); var/ for what the services write (theirs, 0700)."""
        if self.run_dir == DEFAULT_RUN_DIR:
            data = DEFAULT_RUN_DIR.parent
            data.mkdir(mode=0o711, exist_ok=True)
            if data.stat().st_uid == os.geteuid():
                # Others pass through to the run dir (closed to them), and
                # list nothing: the clusters' password files are here too.
                data.chmod(0o711)
        closed = closed_directory(self.account, self.run_dir.parent)
        if closed is not None:
            raise StackError(
                f"{closed} is closed to {self.account.name}, whose services must "
                f"reach the run dir {self.run_dir}: choose another --run-dir"
            )
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(self.run_dir, -1, self.account.gid)
        self.run_dir.chmod(0o700 if self.account.is_us else 0o710)
        self.log_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_dir.chmod(0o700)
        self.var_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.var_dir, self.account.uid, self.account.gid)
        self.var_dir.chmod(0o700)

    def _write_config(self, name: str, text: str) -> Path:
        """A configuration file in the run dir, readable by the services (0640)."""
        path = self.run_dir / name
        write_private(path, text, mode=0o640, group=self.account.gid)
        return path

    def _start_postgres(self) -> None:
        from project import embedded_pg

        data = self.pg_data or embedded_pg.DEV_DATA_DIR
        self.pg_started_here = not embedded_pg.is_running(data)
        embedded_pg.ensure_running(data, self.database)
        # PgBouncer and the migrations, as the services' user, log in there.
        embedded_pg.share_socket(data, self.account.gid)
        try:
            role = database.ensure_role(
                embedded_pg.connect_kwargs(data), self.database, self.db_password
            )
        except ValueError as exc:
            raise StackError(f"--database: {exc}") from None
        self._db = {
            "NAME": self.database,
            "HOST": str(embedded_pg.socket_dir(data)),
            "PORT": embedded_pg.PORT,
            "USER": role,
            "PASSWORD": self.db_password,
        }
        host = quote(self._db["HOST"], safe="")
        direct_url = (
            f"postgres://{role}:{self.db_password}@{host}:{embedded_pg.PORT}"
            f"/{self.database}"
        )
        environment = {
            key: value
            for key, value in os.environ.items()
            if key != "DJANGO_SETTINGS_MODULE"
        }
        environment.update(
            self._settings_env(), ENVIRONMENT="production", DATABASE_URL=direct_url
        )
        # Migrations straight to PostgreSQL, not through transaction pooling,
        # and as the service's role: it owns what they create.
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=BASE_DIR,
            env=environment,
            check=True,
            **self.account.popen_kwargs(),
        )

    def _start_pgbouncer(self) -> None:
        self.pgbouncer_port = free_port()
        config = pgbouncer.write_config(
            self.run_dir,
            port=self.pgbouncer_port,
            db=self._db,
            pool_size=PGBOUNCER_SERVER_CONNECTIONS,
            max_client_conn=PGBOUNCER_MAX_CLIENT_CONN,
            group=self.account.gid,
        )
        log = self.log_dir / "pgbouncer.log"
        private_log(log)
        process = pgbouncer.start(
            self.binaries["pgbouncer"], config, log, **self._as_service()
        )
        self.processes.started.append(process)
        self.pgbouncer = process
        self.database_url = pgbouncer.client_url(self.pgbouncer_port, self._db)

    def _start_redis(self) -> None:
        """Redis (deploy/redis.conf) for the aggregation cache the instances share."""
        port = free_port()
        config = self._write_config(
            "redis.conf",
            render(
                (DEPLOY_DIR / "redis.conf").read_text(),
                port=str(port),
                password=self.redis_password,
                var_dir=str(self.var_dir),
                maxmemory=REDIS_MAXMEMORY,
            ),
        )
        private_log(self.log_dir / "redis.log")
        process = self.processes.popen(
            [self.binaries["redis-server"], str(config)], "redis", **self._as_service()
        )
        self.redis = process
        self.redis_url = f"redis://:{self.redis_password}@127.0.0.1:{port}/0"
        wait_for_port(port, process)

    def _settings_env(self) -> dict[str, str]:
        """Production settings, as settings/production.py requires them, all but
        ENVIRONMENT and DATABASE_URL (the migrations' and the instances' differ)."""
        return dict(
            SECRET_KEY=self.secret_key,
            ALLOWED_HOSTS=ALLOWED_HOSTS,
            AGGREGATIONS_FILE=str(AGGREGATIONS_FILE),
            AGGREGATION_API_TOKENS=self.aggregation_token,
            DEMO_UPSTREAM_URL=self.upstream_url,
            # Scrapers send the token to the instances; nginx serves no /metrics.
            METRICS_TOKENS=self.metrics_token,
            DEMO_ENDPOINTS="true" if self.demo else "false",
            # nginx here speaks plain HTTP on loopback: there is no HTTPS to
            # redirect to. In front of users it terminates TLS, sets
            # X-Forwarded-Proto, and this stays on (production's default).
            SECURE_SSL_REDIRECT="false",
            HOME=str(self.var_dir),
        )

    def instance_env(self) -> dict[str, str]:
        """What an instance sets on top of the production settings: the
        database's pool, its access log and Redis."""
        return {
            **self._settings_env(),
            "DB_POOL_SIZE": str(DB_POOL_SIZE),
            "GUNICORN_ACCESS_LOG": "-",
            "REDIS_URL": self.redis_url,
            **self.env,
        }

    def start_instance(self, index: int) -> None:
        """Start gunicorn instance ``index`` on its port; return when /readyz is 200."""
        name = f"app{index + 1}"
        private_log(self.log_dir / f"{name}.log")
        self.instances[index] = start_gunicorn(
            self.processes,
            environment="production",
            # PgBouncer in transaction mode: no cursor outlives its transaction.
            database_url=with_query(
                self.database_url, {"disable_server_side_cursors": "true"}
            ),
            workers=self.workers,
            port=self.instance_ports[index],
            env=self.instance_env(),
            # nginx on 127.0.0.1 may set X-Forwarded-Proto/-For (gunicorn's
            # default too, stated): the access log then names the client.
            args=["--forwarded-allow-ips", "127.0.0.1"],
            name=name,
            ready="/readyz",
            **self._as_service(),
        ).process

    def _start_nginx(self) -> None:
        """nginx, master and workers, as the services' user: it needs no root
        (an unprivileged port, files in the run dir)."""
        config = self._write_config("nginx.conf", self.nginx_config())
        var = str(self.var_dir)
        private_log(self.log_dir / "nginx.log")
        self.nginx = self.processes.popen(
            [self.binaries["nginx"], "-p", var, "-c", str(config)]
            + ["-e", f"{var}/nginx-error.log", "-g", "daemon off;"],
            "nginx",
            **self._as_service(),
        )
        wait_for_http(self.url + "/healthz", self.nginx, timeout=10)

    def nginx_config(self) -> str:
        """deploy/nginx.conf for this stack's ports and run dir."""
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1"
            f" fail_timeout={FAIL_TIMEOUT_S}s;"
            for port in self.instance_ports
        )
        return render(
            (DEPLOY_DIR / "nginx.conf").read_text(),
            worker_processes="2",
            var_dir=str(self.var_dir),
            servers=servers,
            port=str(self.port),
            read_timeout=PROXY_READ_TIMEOUT,
        )

    # Rolling restart

    def rolling_restart(self) -> None:
        """Replace the instances one at a time, none failing a request, and
        nginx never reloaded (a reload closes its clients' idle keep-alive
        connections, and a client sending on one just then sees it close)."""
        started = time.monotonic()
        for index in range(INSTANCES):
            self.replace_instance(index)
            self.write_state("restarting")
        self.restarts += 1
        self.last_restart = {
            "ok": True,
            "error": None,
            "seconds": round(time.monotonic() - started, 2),
        }

    def replace_instance(self, index: int) -> None:
        """Stop instance ``index`` gracefully and start it again on its port.

        SIGTERM: gunicorn stops listening at once and finishes its requests,
        answering each with ``Connection: close``. nginx sends what it cannot
        deliver meanwhile (refused, or reset in the closing listener's queue)
        to the other instance, and takes this one out for ``FAIL_TIMEOUT_S``.
        Returns once the new instance answers /readyz, the old one has
        finished, and nginx sends this one requests again, so the next
        instance may stop.
        """
        old = self.instances[index]
        # One that died (kill -9) was reaped already: just start it again.
        if old is not None and old in self.processes.started:
            old.send_signal(signal.SIGTERM)
            wait_until_refused(self.instance_ports[index])
            self.start_instance(index)
            # gunicorn's graceful timeout (30 s), then it kills its workers.
            old.wait(timeout=60)
            self.processes.started.remove(old)
        else:
            self.start_instance(index)
        time.sleep(FAIL_TIMEOUT_S + 0.5)

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
            "service_user": self.account.name,
            "nginx": {
                "pid": pid(self.nginx),
                "port": self.port,
                "config": str(self.run_dir / "nginx.conf"),
                "access_log": str(self.var_dir / "nginx-access.log"),
                "error_log": str(self.var_dir / "nginx-error.log"),
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
            # For scrapers, at each instance's /metrics (Authorization: Bearer).
            "metrics_token": self.metrics_token,
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
        """Write the state file atomically (readers never see half of it),
        0600: it holds every password and token of the stack."""
        path = self.run_dir / STATE_FILE
        partial = path.with_suffix(".tmp")
        write_private(partial, json.dumps(self.state(status), indent=2) + "\n")
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
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve the /demo/ and /example/ endpoints (off in production)",
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
        demo=args.demo,
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
