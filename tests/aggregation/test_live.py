"""The aggregation API in a real gunicorn gevent worker, against the stub upstream."""

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import gevent
import pytest
import requests
from gevent.pool import Pool

from tests.helpers import LIVE_APPLICATION_NAME, app_backends, worker_pid

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "live-token-0123456789"
REGISTRY = """\
[upstreams.stub]
base_url = "${AGG_TEST_STUB}"
timeout_ms = 3000

[queries.sleep]
sql = "SELECT pg_sleep(1)::text AS slept"
timeout_ms = 3000

[queries.long]
sql = "SELECT pg_sleep(5)::text AS slept /* client-goes-away */"

[aggregations.page]
deadline_ms = 3000
sources.one = { upstream = "stub", path = "/delay", query = { ms = "1000" } }
sources.two = { upstream = "stub", path = "/delay", query = { ms = "1001" } }
sources.sql = { sql = "sleep" }

[upstreams.hostile]
base_url = "${AGG_TEST_STUB}"
breaker = { window = 1000, min_calls = 1000 }

[aggregations.hostile]
deadline_ms = 2000
params = { mode = { type = "str", required = true }, n = { type = "int", default = 0 } }
sources.s = { upstream = "hostile", path = "/hostile", query = { mode = "{mode}", n = "{n}" } }

[aggregations.halfclose]
deadline_ms = 3000
sources.http = { upstream = "stub", path = "/delay", query = { ms = "300" } }

[aggregations.long]
deadline_ms = 5000
sources.http = { upstream = "stub", path = "/delay", query = { ms = "5000" } }
sources.sql = { sql = "long" }
"""  # noqa: E501


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory):
    """The registry above, written to a file."""
    path = tmp_path_factory.mktemp("registry") / "aggregations.toml"
    path.write_text(REGISTRY)
    return path


@pytest.fixture(scope="module")
def server(start_gunicorn, test_database_url, upstream, registry_file):
    """One gevent worker serving the registry above."""
    return start_gunicorn(
        test_database_url,
        AGGREGATIONS_FILE=str(registry_file),
        AGG_TEST_STUB=upstream,
        AGGREGATION_API_TOKENS=f" other-token-0123456789 , {TOKEN} ",
        application_name=LIVE_APPLICATION_NAME,
    )


def test_hundred_identical_requests_make_one_call_per_source(server, upstream):
    """100 concurrent identical requests: the stub sees one request per source.

    The sources take 1 s, so all 100 requests arrive while the first is in flight.
    """
    requests.post(f"{upstream}/stats/reset", timeout=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    responses = Pool(100).map(
        lambda _: server.get("/api/aggregate/page/", headers=headers), range(100)
    )
    assert [r.status_code for r in responses] == [200] * 100
    counts = requests.get(f"{upstream}/stats", timeout=5).json()["requests"]
    assert counts == {"/delay": 2}
    shared = sum(bool(r.json()["sources"]["one"].get("shared")) for r in responses)
    assert shared == 99
    assert "aggregate page status=200" in server.log.read_text()


def test_bad_registry_stops_the_service(
    start_gunicorn, test_database_url, upstream, tmp_path
):
    """A registry with a mistake: gunicorn exits, its log naming the line and key."""
    path = tmp_path / "bad.toml"
    path.write_text(REGISTRY.replace('sql = "sleep"', 'sql = "slept"'))
    with pytest.raises(RuntimeError) as caught:
        start_gunicorn(
            test_database_url, AGGREGATIONS_FILE=str(path), AGG_TEST_STUB=upstream
        )
    line = REGISTRY.splitlines().index('sources.sql = { sql = "sleep" }') + 1
    assert (
        f"aggregation registry: {path}:{line}: aggregations.page.sources.sql.sql: "
        "unknown query 'slept'" in str(caught.value)
    )


def query_running() -> int:
    """Backends of the live server still running the long query."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE %s AND pid <> pg_backend_pid()",
            ["%client-goes-away%"],
        )
        return cursor.fetchone()[0]


def test_client_going_away_cancels_the_sources(server):
    """A client that hangs up: its legs are killed and the SQL cancelled at once."""
    parts = urlsplit(server.url)
    client = socket.create_connection((parts.hostname, parts.port))
    client.sendall(
        b"GET /api/aggregate/long/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    waited = time.monotonic()
    while not query_running() and time.monotonic() - waited < 2:
        gevent.sleep(0.05)
    assert query_running() == 1
    client.close()
    hung_up = time.monotonic()
    while query_running() and time.monotonic() - hung_up < 2:
        gevent.sleep(0.05)
    assert time.monotonic() - hung_up < 1.0
    assert query_running() == 0
    gevent.sleep(0.1)
    assert "aggregate long status=499" in server.log.read_text()
    assert app_backends(state="active") == 0


def test_a_client_that_half_closes_still_gets_its_answer(server):
    """A client that shuts down only its sending side once the request is out
    is not gone: it reads an interim 103, then its 200."""
    parts = urlsplit(server.url)
    client = socket.create_connection((parts.hostname, parts.port), timeout=5)
    client.sendall(
        b"GET /api/aggregate/halfclose/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    client.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    client.close()
    assert answer.startswith(b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 ")
    assert b'"status": "ok"' in answer or b'"status":"ok"' in answer
    assert "aggregate halfclose status=200" in server.log.read_text()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_hostile_upstream_cannot_stall_or_bloat_the_worker(server):
    """50 calls to endless-header / gzip-bomb upstreams (one every 20 ms): each a
    502 within the deadline + 100 ms, /healthz under 100 ms meanwhile, the same
    worker throughout, its peak RSS under 150 MB."""
    worker = worker_pid(server)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    modes = ["header_line", "headers", "interim", "status_line", "gzip_bomb"]

    def call(i: int) -> tuple[int, float]:
        started = time.monotonic()
        response = server.get(
            f"/api/aggregate/hostile/?mode={modes[i % 5]}&n={i}", headers=headers
        )
        return response.status_code, time.monotonic() - started

    calls = [gevent.spawn_later(i * 0.02, call, i) for i in range(50)]
    health = []
    while not all(c.ready() for c in calls):
        started = time.monotonic()
        assert server.get("/healthz").status_code == 200
        health.append(time.monotonic() - started)
        gevent.sleep(0.02)
    results = [c.get() for c in calls]
    assert [status for status, _ in results] == [502] * 50
    assert max(elapsed for _, elapsed in results) < 2.0 + 0.1
    assert len(health) > 20 and max(health) < 0.1, sorted(health)[-3:]
    assert worker_pid(server) == worker  # not killed and replaced
    assert _peak_rss_mb(worker) < 150
