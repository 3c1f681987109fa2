"""The stub upstream's WSGI app: one function an endpoint, and the request counters."""

import json
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qs

import gevent

from devtools.upstream.hostile import hostile
from devtools.upstream.responses import (
    MAX_MS,
    AbortConnection,
    BadParam,
    Endpoint,
    Environ,
    Query,
    StartResponse,
    WSGIApp,
    int_param,
    json_reply,
)

MAX_CHUNKS = 10_000
# X-Request-ID values kept for /stats/request-ids, newest last.
SEEN_REQUEST_IDS = 1000
DELAY_BODY_BYTES = 100
TRICKLE_CHUNK = b"x" * 10


def _delay_body(ms: int) -> bytes:
    base = {"slept_ms": ms, "server": "stub-upstream", "pad": ""}
    pad = DELAY_BODY_BYTES - len(json.dumps(base))
    return json.dumps({**base, "pad": "x" * max(pad, 0)}).encode()


def _sleep_ms(query: Query) -> None:
    gevent.sleep(int_param(query, "ms", default=0, low=0, high=MAX_MS) / 1000)


def delay(query: Query, environ: Environ, start_response: StartResponse) -> list[bytes]:
    """``/delay?ms=D``: 200 with a 100-byte JSON body after D ms."""
    ms = int_param(query, "ms", default=0, low=0, high=MAX_MS)
    gevent.sleep(ms / 1000)
    body = _delay_body(ms)
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def status(
    query: Query, environ: Environ, start_response: StartResponse
) -> list[bytes]:
    """``/status?code=C&ms=D``: status C with ``{"status": C}`` after D ms."""
    code = int_param(query, "code", default=None, low=100, high=599)
    _sleep_ms(query)
    return json_reply(start_response, code, {"status": code})


def reset(query: Query, environ: Environ, start_response: StartResponse) -> list[bytes]:
    """``/reset?ms=D``: after D ms the connection is reset, no response."""
    _sleep_ms(query)
    raise AbortConnection


def _trickle(chunks: int, interval_ms: int) -> Iterator[bytes]:
    # pywsgi sends each yielded item straight away, so the sleeps reach the wire.
    for i in range(chunks):
        if i:
            gevent.sleep(interval_ms / 1000)
        yield TRICKLE_CHUNK


def trickle(
    query: Query, environ: Environ, start_response: StartResponse
) -> Iterator[bytes]:
    """``/trickle?chunks=N&interval_ms=I[&chunked=1]``: N 10-byte chunks, I ms apart."""
    chunks = int_param(query, "chunks", default=10, low=0, high=MAX_CHUNKS)
    interval = int_param(query, "interval_ms", default=0, low=0, high=MAX_MS)
    headers = [("Content-Type", "text/plain")]
    if int_param(query, "chunked", default=0, low=0, high=1) == 0:
        headers.append(("Content-Length", str(chunks * len(TRICKLE_CHUNK))))
    start_response("200 OK", headers)
    return _trickle(chunks, interval)


def headers(
    query: Query, environ: Environ, start_response: StartResponse
) -> list[bytes]:
    """``/headers``: the request's headers as JSON, lowercase names."""
    sent = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    return json_reply(start_response, 200, sent)


class Stats:
    """Requests per path and distinct client connections since start or reset."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.clients: set[tuple[str | None, str | None]] = set()
        self.request_ids: deque[str] = deque(maxlen=SEEN_REQUEST_IDS)
        # A no-op under gevent; keeps counts right if the app runs in a threaded server.
        self.lock = threading.Lock()

    def count(self, path: str, environ: Environ) -> None:
        """Count one request on arrival (before any delay: in-flight ones show)."""
        with self.lock:
            self.counts[path] += 1
            self.clients.add((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")))
            request_id = environ.get("HTTP_X_REQUEST_ID")
            if request_id is not None:
                self.request_ids.append(request_id)

    def show(
        self, query: Query, environ: Environ, start_response: StartResponse
    ) -> list[bytes]:
        """``/stats``: ``{"requests": {path: count}, "connections": N}``."""
        with self.lock:
            snapshot = {"requests": dict(self.counts), "connections": len(self.clients)}
        return json_reply(start_response, 200, snapshot)

    def request_ids_seen(
        self, query: Query, environ: Environ, start_response: StartResponse
    ) -> list[bytes]:
        """``/stats/request-ids``: ``{"request_ids": [...]}``, the latest 1,000."""
        with self.lock:
            seen = list(self.request_ids)
        return json_reply(start_response, 200, {"request_ids": seen})

    def reset(
        self, query: Query, environ: Environ, start_response: StartResponse
    ) -> list[bytes]:
        """``/stats/reset``: zero the counts."""
        with self.lock:
            self.counts.clear()
            self.clients.clear()
            self.request_ids.clear()
        return json_reply(start_response, 200, {"requests": {}, "connections": 0})


ENDPOINTS: dict[str, Endpoint] = {
    "/delay": delay,
    "/status": status,
    "/reset": reset,
    "/trickle": trickle,
    "/hostile": hostile,
    "/headers": headers,
}


def make_app() -> WSGIApp:
    """Return a new stub-upstream WSGI app with its own request counters."""
    stats = Stats()
    endpoints = {
        **ENDPOINTS,
        "/stats": stats.show,
        "/stats/reset": stats.reset,
        "/stats/request-ids": stats.request_ids_seen,
    }

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if not path.startswith("/stats"):
            stats.count(path, environ)
        allowed = ("GET", "POST") if path == "/stats/reset" else ("GET",)
        if method not in allowed:
            return json_reply(
                start_response,
                405,
                {"error": f"method {method} not allowed"},
                (("Allow", ", ".join(allowed)),),
            )
        endpoint = endpoints.get(path)
        if endpoint is None:
            return json_reply(start_response, 404, {"error": "not found", "path": path})
        try:
            return endpoint(query, environ, start_response)
        except BadParam as exc:
            return json_reply(
                start_response, 400, {"error": exc.message, "param": exc.param}
            )

    return app
