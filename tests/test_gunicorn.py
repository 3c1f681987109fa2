"""The service end to end: real gunicorn, gevent worker, PostgreSQL, stub upstream."""

import time
from pathlib import Path

import gevent
import pytest
import requests
from gevent.pool import Pool

from conftest import POOL_SIZE, app_backends

pytestmark = pytest.mark.django_db(transaction=True)


def timed_get(server, path: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = server.get(path, **kwargs)
    return response, time.monotonic() - started


def test_worker_is_gevent_and_patched(gunicorn_server):
    """The gevent worker logs that sockets and psycopg2 are patched."""
    log = gunicorn_server.log.read_text()
    assert "Using worker: gevent" in log
    assert "patched=True" in log
    assert "MonkeyPatchWarning" not in log


def test_ten_sql_legs_take_one_leg_time(gunicorn_server):
    """/demo/fan-out/?sql=10&ms=500 returns in under 2 s (serial: 5 s)."""
    response, elapsed = timed_get(gunicorn_server, "/demo/fan-out/?sql=10&ms=500")
    assert response.status_code == 200
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert 0.5 <= elapsed < 2.0


def test_ten_http_legs_take_one_leg_time(gunicorn_server):
    """/demo/fan-out/?http=10&ms=500 against the stub returns in under 2 s."""
    response, elapsed = timed_get(gunicorn_server, "/demo/fan-out/?http=10&ms=500")
    assert response.status_code == 200
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert 0.5 <= elapsed < 2.0


def test_fifty_concurrent_slow_queries_on_one_worker(gunicorn_server):
    """50 clients each calling /demo/slow-sql/?ms=500 all finish in under 3 s."""
    pool = Pool(50)
    started = time.monotonic()
    responses = pool.map(
        lambda x: gunicorn_server.get(f"/demo/slow-sql/?x={x}&ms=500"), range(50)
    )
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 50
    assert [r.json()["square"] for r in responses] == [x * x for x in range(50)]
    assert elapsed < 3.0


def test_deadline_cuts_legs_and_leaves_nothing_behind(gunicorn_server):
    """Legs outlasting the deadline are timed out on time; no query keeps running."""
    response, elapsed = timed_get(
        gunicorn_server,
        "/demo/fan-out/?http=5&sql=5&ms=5000",
        headers={"X-Request-Timeout-Ms": "400"},
    )
    assert elapsed < 1.2
    body = response.json()
    assert response.status_code == 200
    assert [leg["status"] for leg in body["legs"]] == ["timeout"] * 10
    assert body["deadline_ms"] == 400
    waited = time.monotonic()
    while app_backends(state="active") and time.monotonic() - waited < 1.0:
        gevent.sleep(0.05)
    assert app_backends(state="active") == 0
    assert app_backends() <= POOL_SIZE


def test_bad_input_through_gunicorn_is_a_400(gunicorn_server):
    """Validation errors reach the client as 400 JSON, not 500."""
    response = gunicorn_server.get("/demo/fan-out/?http=1000&ms=1")
    assert response.status_code == 400
    assert response.json()["param"] == "http"


def test_default_upstream_is_this_server(start_gunicorn, test_database_url):
    """Without DEMO_UPSTREAM_URL the HTTP legs call this server's own /demo/delay."""
    server = start_gunicorn(test_database_url, workers=1)
    response, elapsed = timed_get(server, "/demo/fan-out/?http=10&ms=300")
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert elapsed < 1.5


def test_unreachable_database_fails_fast_with_503(start_gunicorn, tmp_path):
    """With no database, /readyz and SQL endpoints answer 503 JSON quickly."""
    server = start_gunicorn(
        f"postgres://nobody@{tmp_path.as_posix().replace('/', '%2F')}/x"
    )
    response, elapsed = timed_get(server, "/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("database:")
    assert elapsed < 2.0
    response = server.get("/demo/slow-sql/?x=1&ms=1")
    assert response.status_code == 503
    assert response.json()["error"] == "database unavailable"
    assert server.get("/healthz").status_code == 200


def test_recycled_workers_keep_the_embedded_database(start_gunicorn):
    """Workers restarted by max_requests leave the embedded PostgreSQL running."""
    from django.conf import settings

    from project import embedded_pg

    server = start_gunicorn(
        "", GUNICORN_MAX_REQUESTS="5", GUNICORN_MAX_REQUESTS_JITTER="0"
    )
    statuses = []
    deadline = time.monotonic() + 20
    while server.log.read_text().count("Booting worker") < 3:
        assert time.monotonic() < deadline, "workers were not recycled"
        try:
            statuses.append(server.get("/readyz", timeout=5).status_code)
        except requests.ConnectionError:  # between an old worker and its successor
            pass
        gevent.sleep(0.05)
    assert len(statuses) >= 10
    assert set(statuses) == {200}
    assert embedded_pg.is_running(Path(settings.EMBEDDED_PG_DATA_DIR))
    assert server.get("/readyz").status_code == 200


def test_each_instance_has_its_own_control_socket(
    start_gunicorn, test_database_url, tmp_path
):
    """Two servers on one host get two gunicornc sockets, named by their address."""
    servers = [
        start_gunicorn(test_database_url, workers=1, XDG_RUNTIME_DIR=str(tmp_path))
        for _ in range(2)
    ]
    expected = {
        "gunicorn-" + server.url.removeprefix("http://").replace(":", "_") + ".ctl"
        for server in servers
    }
    assert {path.name for path in tmp_path.iterdir() if path.is_socket()} == expected
