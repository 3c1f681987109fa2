"""One request followed end to end in a real gunicorn: its id in the database's
pg_stat_activity, at the upstream and in the logs, plain and JSON."""

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import gevent
import pytest
import requests
from django.db import connection

from devtools.gunicorn import Server

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "rid-live-token-0123456789"
APP_FIELDS = {"time", "level", "logger", "message", "request_id"}
ACCESS_FIELDS = {"time", "level", "request_id", "method", "path", "route", "status"}
ACCESS_FIELDS |= {"duration_ms", "bytes", "remote_addr"}


def _new_id() -> str:
    return f"live-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="module")
def plain_server(start_gunicorn, test_database_url, upstream) -> Server:
    """One worker, plain logs, the access log on, fan-out HTTP legs at the stub."""
    return start_gunicorn(
        test_database_url, DEMO_UPSTREAM_URL=upstream, GUNICORN_ACCESS_LOG="-"
    )


@pytest.fixture(scope="module")
def json_server(start_gunicorn, test_database_url, upstream) -> Server:
    """As ``plain_server`` with LOG_FORMAT=json and the aggregation API on."""
    return start_gunicorn(
        test_database_url,
        DEMO_UPSTREAM_URL=upstream,
        GUNICORN_ACCESS_LOG="-",
        LOG_FORMAT="json",
        AGGREGATION_API_TOKENS=TOKEN,
        CATALOG_URL=upstream,
        REVIEWS_URL=upstream,
    )


def _queries_tagged(request_id: str) -> list[str]:
    """Queries other backends run right now under ``request_id``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND state = 'active' AND query LIKE %s",
            [f"/* request_id='{request_id}' */%"],
        )
        return [row[0] for row in cursor.fetchall()]


def _wait_for(check: Callable[[], object], timeout: float = 5.0) -> object:
    """Poll ``check`` until it returns something true; fail after ``timeout``."""
    until = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < until, "not seen in time"
        time.sleep(0.05)
    return result


def _log_lines(log: Path, request_id: str, json_format: bool = False) -> list[str]:
    """The log's lines once the access line of ``request_id`` is written
    (the request's app lines name it too, and may come first)."""
    if json_format:
        marker = f'"logger":"gunicorn.access","request_id":"{request_id}"'
    else:
        marker = f"ms rid={request_id}"

    def written() -> list[str]:
        lines = log.read_text().splitlines()
        return lines if any(marker in line for line in lines) else []

    return _wait_for(written)


def test_one_request_is_seen_in_the_database_upstream_and_access_log(
    plain_server, upstream
):
    request_id = _new_id()
    call = gevent.spawn(
        plain_server.get,
        "/demo/fan-out/?http=2&sql=2&ms=800",
        headers={"X-Request-ID": request_id},
    )
    # Both pg_sleep(0.8) legs show up tagged while the request runs.
    _wait_for(lambda: len(_queries_tagged(request_id)) == 2)
    response = call.get(timeout=15)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 4
    assert _queries_tagged(request_id) == []  # done: nothing left running
    seen = requests.get(f"{upstream}/stats/request-ids", timeout=5).json()
    assert seen["request_ids"].count(request_id) == 2
    lines = _log_lines(plain_server.log, request_id)
    [access] = [line for line in lines if line.endswith(f"ms rid={request_id}")]
    assert '"GET /demo/fan-out/?http=2&sql=2&ms=800 HTTP/1.1" 200' in access


def test_metrics_requests_are_not_in_the_plain_access_log(plain_server):
    plain_server.get("/metrics")
    request_id = _new_id()
    plain_server.get("/healthz", headers={"X-Request-ID": request_id})
    lines = _log_lines(plain_server.log, request_id)
    assert '"GET /healthz HTTP/1.1" 200' in "\n".join(lines)
    assert not [line for line in lines if '"GET /metrics' in line]


def _parse(line: str) -> dict:
    fields = json.loads(line)
    moment = datetime.fromisoformat(fields["time"].replace("Z", "+00:00"))
    assert moment.utcoffset() == UTC.utcoffset(None)
    return fields


def test_json_logs_are_one_object_per_line_with_the_request_fields(json_server):
    ids = {name: _new_id() for name in ("health", "fan_out", "missing", "aggregate")}
    requests_made = [
        ("/healthz", ids["health"], {}),
        ("/demo/fan-out/?http=1&sql=1&ms=10", ids["fan_out"], {}),
        ("/metrics", _new_id(), {}),
        ("/no-such-page/", ids["missing"], {}),
        (
            "/api/aggregate/product/?id=7&ms=0",
            ids["aggregate"],
            {"Authorization": f"Bearer {TOKEN}"},
        ),
    ]
    for path, request_id, headers in requests_made:
        answer = json_server.get(path, headers={"X-Request-ID": request_id, **headers})
        assert answer.headers["X-Request-ID"] == request_id
    lines = _log_lines(json_server.log, ids["aggregate"], json_format=True)
    records = [_parse(line) for line in lines if line.strip()]
    access = {
        r["request_id"]: r for r in records if r.get("logger") == "gunicorn.access"
    }
    assert not [r for r in access.values() if r["path"] == "/metrics"]
    assert set(ids.values()) <= set(access)
    for record in access.values():
        assert ACCESS_FIELDS <= set(record)
    assert access[ids["health"]]["route"] == "healthz"
    assert access[ids["fan_out"]]["route"] == "demo-fan-out"
    assert access[ids["missing"]]["status"] == 404
    aggregate = access[ids["aggregate"]]
    assert (aggregate["route"], aggregate["status"]) == ("aggregate", 200)
    assert set(aggregate["sources"]) == {"details", "reviews", "stock"}
    app = [r for r in records if r.get("logger") != "gunicorn.access"]
    assert all(APP_FIELDS <= set(r) for r in app)
    [not_found] = [r for r in app if r["request_id"] == ids["missing"]]
    assert (not_found["logger"], not_found["level"]) == ("django.request", "WARNING")
