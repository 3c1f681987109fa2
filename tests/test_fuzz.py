"""Hostile input on every endpoint of a production-mode service: no 5xx, no hang,
JSON errors, nothing internal in any answer."""

import http.client
import json
import time
from urllib.parse import quote, urlsplit

import pytest
from gevent.pool import Pool

from devtools.processes import stop as stop_process
from tests.helpers import production_env

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "fuzz-token-0123456789"
ODD_NUMBERS = [
    "", " ", "0", "-0", "+1", "-1", "1e3", "0x10", "1_000", "1.5", "١٢", "９",
    "9" * 20, "9" * 5000, "NaN", "inf", "%00", "%ff", "1%20", "true", "[]", "1,2",
]  # fmt: skip
ENDPOINT_PARAMS = {
    "/demo/delay/": {"ms": "1"},
    "/demo/slow-sql/": {"x": "3", "ms": "1"},
    "/demo/fan-out/": {"http": "1", "sql": "1", "ms": "1"},
    "/api/aggregate/product/": {"id": "7", "ms": "1"},
}
OTHER_PATHS = ["/healthz", "/readyz", "/api/aggregate/nope/", "/nope", "/%ff/"]
# What an answer must never show: addresses, paths, driver or Python internals.
INTERNAL = ["/work/", ".data", ".sock", "Traceback", "psycopg2", 'File "', "127.0.0.1:"]


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{key}={quote(value, safe='%')}" for key, value in params.items())


def hostile_requests() -> list[tuple[str, str, dict[str, str]]]:
    """(method, target, headers) for every endpoint, a few hundred in all."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = []
    for path, valid in ENDPOINT_PARAMS.items():
        headers = auth if path.startswith("/api/") else {}
        for name in valid:
            for odd in ODD_NUMBERS:
                cases.append(("GET", f"{path}?{_query({**valid, name: odd})}", headers))
            repeated = f"{path}?{_query(valid)}&{name}={valid[name]}"
            cases.append(("GET", repeated, headers))
            missing = {k: v for k, v in valid.items() if k != name}
            cases.append(("GET", f"{path}?{_query(missing)}", headers))
        for odd in ODD_NUMBERS[:14]:
            cases.append(
                (
                    "GET",
                    f"{path}?{_query(valid)}",
                    {**headers, "X-Request-Timeout-Ms": odd},
                )
            )
    for path in [*ENDPOINT_PARAMS, *OTHER_PATHS]:
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]:
            cases.append((method, path, {}))
        for host in ["evil.example", "127.0.0.1:99999", "[::1", "a" * 300, "é.example"]:
            cases.append(("GET", path, {"Host": host}))
        cases.append(("GET", path, {"X-Huge": "x" * 9000}))
        cases.append(("GET", path, {f"X-Many-{i}": "1" for i in range(120)}))
    cases.append(("GET", "/" + "a" * 5000, {}))
    for value in ["Bearer", "Bearer ", "Basic eDp5", "Bearer " + "x" * 5000, TOKEN]:
        cases.append(("GET", "/api/aggregate/product/?id=7", {"Authorization": value}))
    return cases


def _send(url: str, method: str, target: str, headers: dict[str, str]):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    started = time.monotonic()
    try:
        connection.putrequest(method, target, skip_host="Host" in headers)
        for name, value in headers.items():
            connection.putheader(name, value.encode())  # UTF-8 bytes, sent as is
        connection.endheaders()
        response = connection.getresponse()
        return (
            response.status,
            response.getheader("Content-Type"),
            response.read(),
            (time.monotonic() - started),
        )
    finally:
        connection.close()


def test_hostile_input_on_every_endpoint(start_gunicorn, test_database_url, upstream):
    """No 5xx, no hang, a JSON body, nothing internal, for every hostile request."""
    server = start_gunicorn(
        test_database_url,
        **production_env(upstream, TOKEN),
        application_name="gevent-django-fuzz",
    )
    cases = hostile_requests()
    assert len(cases) >= 300
    results = Pool(8).map(lambda case: (case, _send(server.url, *case)), cases)
    problems = []
    for (method, target, headers), (status, content_type, body, elapsed) in results:
        where = f"{method} {target[:80]} {list(headers)[:2]} -> {status}"
        # A deadline the client set too short (X-Request-Timeout-Ms: +1) is
        # a 504 by contract; any other 5xx is a defect.
        deadline_504 = status == 504 and "X-Request-Timeout-Ms" in headers
        if status >= 500 and not deadline_504:
            problems.append(f"{where}: server error {body[:200]!r}")
        if elapsed > 5:
            problems.append(f"{where}: took {elapsed:.1f} s")
        if method != "HEAD" and body:
            if "application/json" not in (content_type or ""):
                problems.append(f"{where}: not JSON ({content_type}) {body[:100]!r}")
            else:
                json.loads(body)
        text = body.decode("utf-8", errors="replace")
        for marker in INTERNAL:
            if marker in text:
                problems.append(f"{where}: shows {marker!r}")
    assert problems == [], "\n".join(problems[:20])
    stop_process(server.process)
