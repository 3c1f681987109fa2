"""W1 with nothing but gevent: what one fan-out costs at the least on this stack.

For ``/anything?http=N&ms=M`` it spawns N greenlets, each GETs the stub
upstream's ``/delay?ms=M`` through one geventhttpclient pool per worker (as
many connections as the service's default pool: one per worker connection),
joins them and writes a JSON answer of the service's shape. No Django, no
middleware, no metrics, no request ids, no deadline, no admission: the
service's request path costs what it costs above this (issue 26's ratio).
The upstream is ``DEMO_UPSTREAM_URL``; the worker's connection count is
``WORKER_CONNECTIONS`` (what gunicorn is started with).
"""

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

# The same timeouts as the service's legs would have under W1's deadline.
CONNECT_TIMEOUT_S = 2.0
LEG_TIMEOUT_S = 5.0

_client: HTTPClient | None = None


def _pool() -> HTTPClient:
    global _client
    if _client is None:
        upstream = URL(os.environ["DEMO_UPSTREAM_URL"])
        _client = HTTPClient(
            upstream.host,
            port=upstream.port,
            concurrency=int(os.environ.get("WORKER_CONNECTIONS", "1000")),
            connection_timeout=CONNECT_TIMEOUT_S,
            network_timeout=LEG_TIMEOUT_S,
        )
    return _client


def _leg(path: str) -> dict[str, Any]:
    started = time.monotonic()
    response = _pool().get(path)
    response.read()
    return {
        "name": "http",
        "status": "ok" if response.status_code < 300 else "error",
        "value": {"http_status": response.status_code},
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """One fan-out of ``http`` legs of ``ms`` each; a JSON answer."""
    started = time.monotonic()
    query = parse_qs(environ.get("QUERY_STRING", ""))
    legs = int(query.get("http", ["1"])[0])
    path = f"/delay?ms={int(query.get('ms', ['0'])[0])}"
    greenlets = [gevent.spawn(_leg, path) for _ in range(legs)]
    gevent.joinall(greenlets, timeout=LEG_TIMEOUT_S)
    results = [g.value if g.successful() else {"status": "error"} for g in greenlets]
    body = json.dumps(
        {
            "legs": results,
            "ok": sum(result["status"] == "ok" for result in results),
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


REFUSAL = json.dumps(
    {"error": "overloaded", "reason": "limit", "detail": "the rival of a refusal"}
).encode()


def refusing(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """A canned 503 for every path but ``/healthz`` (200, to say it is up):
    what gunicorn's own worker spends on a refusal at the least
    (``python -m loadtests.refusal_cost``)."""
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    start_response(
        "503 Service Unavailable",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(REFUSAL))),
            ("Retry-After", "1"),
        ],
    )
    return [REFUSAL]
