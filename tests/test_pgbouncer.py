"""The service through a real PgBouncer in transaction pooling mode."""

import time

import pytest

from deploy import pgbouncer as pgbouncer_runner
from devtools.gunicorn import with_query
from devtools.ports import free_port
from devtools.processes import stop as stop_process

pytestmark = pytest.mark.django_db(transaction=True)

PGBOUNCER = pgbouncer_runner.binary()


@pytest.fixture(scope="module")
def pgbouncer(tmp_path_factory, django_db_setup, django_db_blocker):
    """A PgBouncer on a loopback port in front of the test database, configured
    from deploy/pgbouncer.ini as the stack runs it."""
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    from django.db import connection

    db = connection.settings_dict
    if not db["HOST"].startswith("/"):
        pytest.skip("written for the embedded (unix socket) test cluster")
    workdir = tmp_path_factory.mktemp("pgbouncer")
    port = free_port()
    config = pgbouncer_runner.write_config(workdir, port=port, db=db)
    try:
        process = pgbouncer_runner.start(PGBOUNCER, config, workdir / "pgbouncer.log")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield pgbouncer_runner.client_url(port, db)
    stop_process(process)


@pytest.fixture(scope="module")
def bounced_server(start_gunicorn, pgbouncer):
    """One gevent worker whose database is reached through PgBouncer."""
    return start_gunicorn(
        with_query(pgbouncer, {"disable_server_side_cursors": "true"})
    )


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
