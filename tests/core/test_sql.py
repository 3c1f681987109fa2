import time

import gevent
import pytest
from django.db import connection

from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out
from project.core.pg_pool.pools import all_pools
from project.core.sql import run_query, with_own_connection
from tests.helpers import app_backends, pool_in_use

# Spawned greenlets use their own connections, which cannot see a test's
# uncommitted transaction: these tests run outside one.
pytestmark = pytest.mark.django_db(transaction=True)

APP = "gevent-django"


def backends_running(query_fragment: str) -> int:
    """Count other backends whose current query contains ``query_fragment``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND state = 'active' AND query LIKE %s",
            [f"%{query_fragment}%"],
        )
        return cursor.fetchone()[0]


def app_connections() -> int:
    """Connections this test process opened besides its own (application_name)."""
    return app_backends(APP)


def test_parameters_are_bound():
    """Values travel as parameters: a quote in a value is data, not SQL."""
    assert run_query("SELECT %s::text, %s::int * 2", ["O'Brien; DROP TABLE x", 21]) == [
        ("O'Brien; DROP TABLE x", 42)
    ]


def test_statement_timeout_stops_the_query_on_the_server():
    """A query longer than its timeout raises TimeoutError after about the timeout."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_query("SELECT pg_sleep(5)", timeout=0.2)
    assert time.monotonic() - started < 1.5
    # The timeout was SET LOCAL: the same connection has no timeout left over.
    assert run_query("SHOW statement_timeout") == [("30s",)]


def test_sql_legs_run_concurrently_on_their_own_connections():
    """Ten 0.5 s queries in greenlets take under 2 s and give back their connections."""
    connection.ensure_connection()  # the test's own connection stays checked out
    before = pool_in_use()
    legs = [
        Leg(
            "sql",
            lambda timeout: with_own_connection(
                lambda: run_query(
                    "SELECT pg_sleep(0.5), pg_backend_pid()", timeout=timeout
                )
            ),
        )
        for _ in range(10)
    ]
    started = time.monotonic()
    results = fan_out(legs, deadline=Deadline(5), max_concurrency=100)
    assert time.monotonic() - started < 2.0
    assert [r.status for r in results] == ["ok"] * 10
    assert len({r.value[0][1] for r in results}) == 10  # ten distinct backends
    assert pool_in_use() == before
    assert app_connections() <= max(pool.size for pool in all_pools().values())


def test_killed_leg_cancels_its_query_and_releases_its_connection():
    """A leg killed at the deadline stops its query on the server within 1 s."""
    connection.ensure_connection()  # the test's own connection stays checked out
    before = pool_in_use()
    legs = [
        Leg(
            "sql",
            lambda timeout: with_own_connection(
                lambda: run_query("SELECT pg_sleep(30) /* killme */")
            ),
        )
        for _ in range(3)
    ]
    started = time.monotonic()
    results = fan_out(legs, deadline=Deadline(0.3), max_concurrency=10)
    assert time.monotonic() - started < 1.0
    assert [r.status for r in results] == ["timeout"] * 3
    waited = time.monotonic()
    while backends_running("killme") and time.monotonic() - waited < 1.0:
        gevent.sleep(0.05)
    assert backends_running("killme") == 0
    assert pool_in_use() == before
    # This greenlet's own connection is unaffected and still works.
    assert run_query("SELECT 1") == [(1,)]
