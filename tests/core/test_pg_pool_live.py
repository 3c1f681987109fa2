"""The pooled backend under a real gunicorn worker and a real PostgreSQL."""

import time
from pathlib import Path

import gevent
import pytest
from gevent.pool import Pool

from devtools.processes import stop as stop_process
from tests.helpers import LIVE_APPLICATION_NAME, POOL_SIZE, app_backends, is_shed

pytestmark = pytest.mark.django_db(transaction=True)


def _sample_peak(peak: list[int], sampling: list[bool], **filters: str) -> None:
    while sampling[0]:
        peak[0] = max(peak[0], app_backends(**filters))
        gevent.sleep(0.05)


def test_400_concurrent_queries_share_a_pool_of_20(start_gunicorn, test_database_url):
    """400 concurrent 200 ms queries, one worker, pool of 20, no timeout: 400 x 200.

    Admission control is off: this is the pool's line holding 400 checkouts
    (with it on, most of the burst is refused before the pool; see the next
    test and tests/test_admission_live.py).
    """
    server = start_gunicorn(
        test_database_url,
        DB_APPLICATION_NAME=LIVE_APPLICATION_NAME,
        DB_POOL_SIZE=str(POOL_SIZE),
        SHED_ENABLED="false",
    )
    peak, sampling = [0], [True]
    sampler = gevent.spawn(_sample_peak, peak, sampling)
    pool = Pool(400)
    responses = pool.map(
        lambda x: server.get(f"/demo/slow-sql/?x={x}&ms=200", timeout=30),
        range(400),
    )
    sampling[0] = False
    sampler.join()
    assert [r.status_code for r in responses] == [200] * 400
    assert 0 < peak[0] <= POOL_SIZE
    assert app_backends(state="active") == 0
    assert app_backends(state="idle") <= POOL_SIZE


def test_400_concurrent_queries_on_the_defaults(start_gunicorn, test_database_url):
    """Nothing set but the database: 400 concurrent 200 ms queries each get a 200
    or, once the pool's line stands, admission control's fast 503; nothing else."""
    name = "gevent-django-defaults"
    server = start_gunicorn(test_database_url, DB_APPLICATION_NAME=name)
    peak, sampling = [0], [True]
    sampler = gevent.spawn(_sample_peak, peak, sampling, application_name=name)
    responses = Pool(400).map(
        lambda x: server.get(f"/demo/slow-sql/?x={x}&ms=200", timeout=30), range(400)
    )
    sampling[0] = False
    sampler.join()
    served = [r for r in responses if r.status_code == 200]
    others = [r for r in responses if r not in served]
    assert all(is_shed(r.status_code, r.headers) for r in others), others[:1]
    assert len(served) > 40
    # Sized from the budget (max_connections 300 here), not clamped at 20.
    assert peak[0] > 20
    stop_process(server.process)  # its idle connections would crowd later servers


def test_full_pool_answers_503_at_the_request_deadline(
    start_gunicorn, test_database_url
):
    """With every connection busy, a 300 ms-deadline request gets its 503 in ~300 ms."""
    server = start_gunicorn(test_database_url, DB_POOL_SIZE="2")
    busy = [gevent.spawn(server.get, "/demo/slow-sql/?x=1&ms=1500") for _ in range(2)]
    gevent.sleep(0.3)
    started = time.monotonic()
    response = server.get(
        "/demo/slow-sql/?x=1&ms=1", headers={"X-Request-Timeout-Ms": "300"}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error"].startswith("database busy")
    assert response.headers["Retry-After"] == "1"
    assert 0.25 <= elapsed < 0.8
    gevent.joinall(busy)
    assert [g.value.status_code for g in busy] == [200, 200]
    assert server.get("/demo/slow-sql/?x=3&ms=1").json()["square"] == 9
    assert server.get("/readyz").status_code == 200


def test_database_restart_fails_fast_and_recovers(start_gunicorn, test_database_url):
    """PostgreSQL restarted under running workers: 503s while down, then no failure.

    The pool holds several idle connections from before the restart; each is
    dead, and none may cost a user request once the server is back.
    """
    from django.conf import settings
    from django.db import connections

    from project import embedded_pg
    from project.core.pg_pool.pools import close_idle_connections

    if not settings.EMBEDDED_PG_DATA_DIR:
        pytest.skip("restarts the embedded test cluster; DATABASE_URL points elsewhere")
    data_dir = Path(settings.EMBEDDED_PG_DATA_DIR)
    server = start_gunicorn(test_database_url, workers=2)
    warm = Pool(40).map(
        lambda x: server.get(f"/demo/slow-sql/?x={x}&ms=100"), range(40)
    )
    assert [r.status_code for r in warm] == [200] * 40
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
    # Sequential, then concurrent (which needs the pool's many stale connections).
    after = [server.get("/demo/slow-sql/?x=2&ms=1").status_code for _ in range(20)]
    after += [
        r.status_code
        for r in Pool(40).map(
            lambda x: server.get(f"/demo/slow-sql/?x={x}&ms=100"), range(40)
        )
    ]
    assert after == [200] * 60
    assert server.get("/readyz").status_code == 200
