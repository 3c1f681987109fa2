"""PgBouncer on a loopback port in front of the embedded PostgreSQL.

Shared by ``deploy/stack.py`` and ``tests/test_pgbouncer.py``: both render
``deploy/pgbouncer.ini`` the same way and start the binary the same way.
"""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deploy.privileges import write_private
from deploy.templates import render
from devtools.ports import wait_for_port

TEMPLATE = Path(__file__).resolve().parent / "pgbouncer.ini"
# PgBouncer refuses to run as root; the embedded server's system user can reach
# the cluster's socket (0700, its own), so PgBouncer runs as that user.
ROOT_RUN_AS = "embedded_postgres"


def binary() -> str | None:
    """The pgbouncer executable (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None


def write_config(
    workdir: Path,
    *,
    port: int,
    db: dict,
    pool_size: int = 5,
    max_client_conn: int = 500,
    group: int | None = None,
) -> Path:
    """Render pgbouncer.ini (and its auth file) into ``workdir``; return its path.

    ``db``: ``NAME``, ``HOST`` (a unix socket directory), ``PORT``, ``USER``,
    ``PASSWORD``, as in Django's ``settings_dict``. Both files are ours alone
    (0600), or readable by ``group`` too (0640) when PgBouncer runs as another
    user of that group.
    """
    mode = 0o600 if group is None else 0o640
    auth_file = workdir / "pgbouncer-users.txt"
    # Clients prove they know this password (SCRAM), and PgBouncer logs in to
    # PostgreSQL (SCRAM too) with it.
    write_private(
        auth_file, f'"{db["USER"]}" "{db["PASSWORD"]}"\n', mode=mode, group=group
    )
    config = workdir / "pgbouncer.ini"
    text = render(
        TEMPLATE.read_text(),
        dbname=db["NAME"],
        db_host=db["HOST"],
        db_port=str(db.get("PORT") or 5432),
        db_user=db["USER"],
        port=str(port),
        auth_file=str(auth_file),
        pool_size=str(pool_size),
        max_client_conn=str(max_client_conn),
    )
    write_private(config, text, mode=mode, group=group)
    return config


def start(
    executable: str, config: Path, log: Path, timeout: float = 10.0, **popen_kwargs: Any
) -> subprocess.Popen:
    """Start PgBouncer with ``config``, output to ``log``; return once it listens.

    ``popen_kwargs`` go to ``subprocess.Popen`` (the stack's ``process_group``,
    and the ``user`` to run as). Under root without a ``user``, PgBouncer
    switches to ``ROOT_RUN_AS`` itself. Raises RuntimeError (with the log)
    when it exits or does not listen in time.
    """
    command = [executable, str(config)]
    if os.geteuid() == 0 and "user" not in popen_kwargs:
        command[1:1] = ["-u", ROOT_RUN_AS]
    port = _listen_port(config)
    with log.open("a") as out:  # written by us, so no permissions to grant
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, **popen_kwargs
        )
    try:
        wait_for_port(port, process, timeout)
    except (RuntimeError, TimeoutError) as exc:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise RuntimeError(f"pgbouncer: {exc}: {log.read_text()}") from None
    return process


def _listen_port(config: Path) -> int:
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "listen_port":
            return int(value)
    raise ValueError(f"no listen_port in {config}")


def client_url(port: int, db: dict) -> str:
    """``DATABASE_URL`` for clients of PgBouncer: the user of the auth file and
    its password."""
    user, name = quote(db["USER"], safe=""), quote(db["NAME"], safe="")
    secret = quote(db["PASSWORD"], safe="")
    return f"postgres://{user}:{secret}@127.0.0.1:{port}/{name}"
