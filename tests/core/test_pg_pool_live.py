"""The pooled backend under a real gunicorn worker and a real PostgreSQL."""

import time
from pathlib import Path

import gevent
import pytest
from gevent.pool import Pool

from conftest import POOL_SIZE, app_backends

pytestmark = pytest.mark.django_db(transaction=True)


def test_400_concurrent_queries_share_a_pool_of_20(gunicorn_server):
    """400 concurrent slow queries on one worker: no errors, at most 20 backends."""
    peak = [0]
    sampling = [True]

    def sample() -> None:
        while sampling[0]:
            peak[0] = max(peak[0], app_backends())
            gevent.sleep(0.05)

    sampler = gevent.spawn(sample)
    pool = Pool(400)
    responses = pool.map(
        lambda x: gunicorn_server.get(f"/demo/slow-sql/?x={x}&ms=200", timeout=30),
        range(400),
    )
    sampling[0] = False
    sampler.join()
    assert [r.status_code for r in responses] == [200] * 400
    assert 0 < peak[0] <= POOL_SIZE
    assert app_backends(state="active") == 0
    assert app_backends(state="idle") <= POOL_SIZE


def test_exhausted_pool_answers_503_fast_and_recovers(
    start_gunicorn, test_database_url
):
    """With every connection busy, a request waits DB_POOL_TIMEOUT, then gets a 503."""
    server = start_gunicorn(test_database_url, DB_POOL_SIZE="2", DB_POOL_TIMEOUT="0.3")
    busy = [gevent.spawn(server.get, "/demo/slow-sql/?x=1&ms=1500") for _ in range(2)]
    gevent.sleep(0.3)
    started = time.monotonic()
    response = server.get("/demo/slow-sql/?x=1&ms=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error"].startswith("database busy")
    assert response.headers["Retry-After"] == "1"
    assert 0.25 <= elapsed < 1.0
    gevent.joinall(busy)
    assert [g.value.status_code for g in busy] == [200, 200]
    assert server.get("/demo/slow-sql/?x=3&ms=1").json()["square"] == 9
    assert server.get("/readyz").status_code == 200


def test_database_restart_fails_fast_and_recovers(start_gunicorn, test_database_url):
    """PostgreSQL restarted under a running worker: 503s while down, 200s after."""
    from django.conf import settings
    from django.db import connections

    from project import embedded_pg
    from project.core.pg_pool.base import close_idle_connections

    if not settings.EMBEDDED_PG_DATA_DIR:
        pytest.skip("restarts the embedded test cluster; DATABASE_URL points elsewhere")
    data_dir = Path(settings.EMBEDDED_PG_DATA_DIR)
    server = start_gunicorn(test_database_url)
    assert server.get("/demo/slow-sql/?x=2&ms=1").status_code == 200
    connections.close_all()
    close_idle_connections()
    embedded_pg.stop(data_dir)
    try:
        started = time.monotonic()
        response = server.get("/demo/slow-sql/?x=2&ms=1")
        assert response.status_code == 503
        assert time.monotonic() - started < 2.0
        assert server.get("/readyz").status_code == 503
    finally:
        embedded_pg.ensure_running(data_dir, "postgres")
    statuses = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses.append(server.get("/demo/slow-sql/?x=2&ms=1").status_code)
        if statuses[-3:] == [200, 200, 200]:
            break
    assert statuses[-3:] == [200, 200, 200]
    assert server.get("/readyz").status_code == 200
