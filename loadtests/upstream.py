"""Stub upstream: a tiny gevent WSGI server the service fans out to in load tests.

Run it as ``python -m loadtests.upstream --port P [--host 127.0.0.1] [--backlog N]``.
It is deliberately not Django and logs nothing per request by default, so it is
never the bottleneck of a benchmark.

Endpoints (GET; bad parameters give 400 ``{"error": ..., "param": ...}``):

* ``/delay?ms=D``: 200 with a 100-byte JSON body after D ms.
* ``/status?code=C&ms=D``: status C (100..599) with ``{"status": C}`` after D ms.
* ``/reset?ms=D``: after D ms the connection is reset (TCP RST), no response.
* ``/trickle?chunks=N&interval_ms=I[&chunked=1]``: 200 with N 10-byte chunks, I ms
  apart; with ``chunked=1`` no Content-Length (chunked transfer encoding).
* ``/headers``: 200 with the request's headers as JSON (lowercase names), so
  tests can check what a client sent (deadlines, auth).
* ``/hostile?mode=M``: a misbehaving upstream, for tests and load runs that aim
  at one. Raw modes write straight to the socket and never finish a response:
  ``header_line`` (one header line that never ends), ``headers`` (new headers
  forever), ``interim`` (``100 Continue`` forever), ``status_line`` (a status
  line that never ends); they stop when the client goes or after
  ``HOSTILE_MAX_BYTES``. Answer modes give a complete 200 that is wrong in one
  way: ``close`` (a valid answer with ``Connection: close``), ``stray`` (a
  valid answer, then ``ms`` later, default 300, stray bytes on the kept-alive
  connection), ``gzip`` (a gzip body with ``Content-Encoding``),
  ``gzip_bomb`` (100 MB of zeros in ~100 KB of gzip), ``json_invalid``,
  ``json_nan`` (``NaN``/``Infinity``), ``json_deep`` (100,000 nested arrays).
* ``/stats``: ``{"requests": {path: count}, "connections": N}`` since start or
  the last reset; N counts distinct client addresses (host, port), that is the
  connections clients opened, so tests can see whether keep-alive reuses them.
* ``/stats/reset`` (GET or POST): zeroes those counts.

``ms``, ``interval_ms`` default to 0 and are capped at 60000; ``chunks`` defaults
to 10 and is capped at 10000; ``code`` is required.

How ``/reset`` resets: the app raises ``AbortConnection``; our pywsgi handler
subclass catches it before pywsgi can turn it into a 500, sets ``SO_LINGER`` to
``(on, 0 s)`` on the client socket and marks the connection for closing.  When
pywsgi then closes the socket, a zero linger makes the kernel drop it and send
RST instead of FIN, so the client sees ``ECONNRESET`` rather than a clean EOF.
This needs our handler; under another WSGI server ``/reset`` would give a 500.
"""

from gevent import monkey

# Patch before anything else is imported, but only when run as a program: an
# importer decides for itself, and patching twice only produces warnings.
if __name__ == "__main__" and not monkey.is_module_patched("socket"):
    monkey.patch_all()

import argparse  # noqa: E402
import gzip  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from http import HTTPStatus  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

MAX_MS = 60_000
MAX_CHUNKS = 10_000
DELAY_BODY_BYTES = 100
TRICKLE_CHUNK = b"x" * 10

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class AbortConnection(Exception):
    """Raised by the app to make the handler reset the connection, not answer."""


class RawReply(Exception):
    """Raised by the app to write raw bytes to the socket instead of answering."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__("raw reply")
        self.chunks = chunks


class BadParam(Exception):
    """A query parameter is missing or out of range; rendered as a 400."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class _StubHandler(WSGIHandler):
    """pywsgi handler: no Nagle delay, and ``AbortConnection`` becomes a TCP reset."""

    def handle(self) -> None:
        # pywsgi writes the headers and the body of a keep-alive response in two
        # sends; with Nagle on, the body waits for the client's delayed ACK and
        # every reused connection pays ~40 ms. Real servers set TCP_NODELAY too.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def get_environ(self) -> dict[str, Any]:
        """pywsgi's environ plus the client socket (``/hostile?mode=stray``)."""
        environ = super().get_environ()
        environ["hostile.socket"] = self.socket
        return environ

    def run_application(self) -> None:
        try:
            super().run_application()
        except AbortConnection:
            # Linger on with a 0 s timeout: close() discards the socket and sends RST.
            self.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.close_connection = True
        except RawReply as reply:
            self.close_connection = True
            sent = 0
            try:
                for chunk in reply.chunks:
                    self.socket.sendall(chunk)
                    sent += len(chunk)
                    if sent > HOSTILE_MAX_BYTES:
                        break
                    gevent.sleep(0)  # other clients of the stub keep their turn
            except OSError:
                pass  # the client gave up: what these modes are for


def _int_param(
    query: dict[str, list[str]],
    name: str,
    *,
    default: int | None,
    low: int,
    high: int,
) -> int:
    values = query.get(name)
    if not values:
        if default is None:
            raise BadParam(name, f"{name} is required")
        return default
    if len(values) > 1:
        raise BadParam(name, f"{name} given more than once")
    # int() would also accept " 1_000" and non-ASCII digits; keep the grammar plain.
    if not re.fullmatch(r"-?[0-9]+", values[0]):
        raise BadParam(name, f"{name} must be an integer, got {values[0]!r}")
    value = int(values[0])
    if not low <= value <= high:
        raise BadParam(name, f"{name} must be between {low} and {high}, got {value}")
    return value


def _json(
    start_response: StartResponse,
    status: int,
    payload: dict[str, Any],
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    body = json.dumps(payload).encode()
    # 1xx, 204 and 304 responses must not carry a body (RFC 9110).
    if status < 200 or status in (204, 304):
        body = b""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # e.g. 599: valid on the wire, unknown to the stdlib
        phrase = "Unknown"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(f"{status} {phrase}", headers + list(extra_headers))
    return [body]


def _delay_body(ms: int) -> bytes:
    base = {"slept_ms": ms, "server": "stub-upstream", "pad": ""}
    pad = DELAY_BODY_BYTES - len(json.dumps(base))
    return json.dumps({**base, "pad": "x" * max(pad, 0)}).encode()


# Raw modes stop after this much, so a client with no limit cannot fill a disk.
HOSTILE_MAX_BYTES = 1 << 30
_FILLER = b"a" * 4096


def _forever(first: bytes, then: bytes) -> Iterator[bytes]:
    yield first
    while True:
        yield then


_RAW_MODES: dict[str, Callable[[], Iterator[bytes]]] = {
    "header_line": lambda: _forever(b"HTTP/1.1 200 OK\r\nX-Endless: ", _FILLER),
    "headers": lambda: _forever(b"HTTP/1.1 200 OK\r\n", b"X-Again: yes\r\n" * 256),
    "interim": lambda: _forever(b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 64),
    "status_line": lambda: _forever(b"HTTP/1.1 200 ", _FILLER),
}
_bodies: dict[str, bytes] = {}


def _gzip_bomb() -> bytes:
    # Made on first use (about a second of CPU), then kept.
    if "bomb" not in _bodies:
        _bodies["bomb"] = gzip.compress(bytes(100 << 20), compresslevel=9)
    return _bodies["bomb"]


def _hostile(
    mode: str, ms: int, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    if mode in _RAW_MODES:
        raise RawReply(_RAW_MODES[mode]())
    headers = [("Content-Type", "application/json")]
    if mode == "stray":
        body = b'{"ok": true}'
        sock = environ["hostile.socket"]
        gevent.spawn_later(
            ms / 1000, _send_quietly, sock, b"stray bytes after the answer"
        )
    elif mode == "close":
        body = b'{"ok": true}'
        headers.append(("Connection", "close"))
    elif mode == "gzip":
        body = gzip.compress(json.dumps({"ok": True, "pad": "x" * 4096}).encode())
        headers.append(("Content-Encoding", "gzip"))
    elif mode == "gzip_bomb":
        body = _gzip_bomb()
        headers.append(("Content-Encoding", "gzip"))
    elif mode == "json_invalid":
        body = b'{"ok": tru'
    elif mode == "json_nan":
        body = b'{"value": NaN, "limit": Infinity}'
    elif mode == "json_deep":
        body = b"[" * 100_000 + b"]" * 100_000
    else:
        raise BadParam("mode", f"unknown mode {mode!r}")
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [body]


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the connection is gone already


def _trickle(chunks: int, interval_ms: int) -> Iterator[bytes]:
    # pywsgi sends each yielded item straight away, so the sleeps reach the wire.
    for i in range(chunks):
        if i:
            gevent.sleep(interval_ms / 1000)
        yield TRICKLE_CHUNK


def make_app() -> WSGIApp:
    """Return a new stub-upstream WSGI app with its own request counters."""
    counts: Counter[str] = Counter()
    clients: set[tuple[str, str]] = set()
    # A no-op under gevent; keeps counts right if the app runs in a threaded server.
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if not path.startswith("/stats"):
            # Counted on arrival, before any delay, so tests can see in-flight requests.
            with lock:
                counts[path] += 1
                clients.add((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")))

        allowed = ("GET", "POST") if path == "/stats/reset" else ("GET",)
        if method not in allowed:
            return _json(
                start_response,
                405,
                {"error": f"method {method} not allowed"},
                (("Allow", ", ".join(allowed)),),
            )

        try:
            if path == "/delay":
                ms = _int_param(query, "ms", default=0, low=0, high=MAX_MS)
                gevent.sleep(ms / 1000)
                body = _delay_body(ms)
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
            if path == "/status":
                code = _int_param(query, "code", default=None, low=100, high=599)
                ms = _int_param(query, "ms", default=0, low=0, high=MAX_MS)
                gevent.sleep(ms / 1000)
                return _json(start_response, code, {"status": code})
            if path == "/reset":
                ms = _int_param(query, "ms", default=0, low=0, high=MAX_MS)
                gevent.sleep(ms / 1000)
                raise AbortConnection
            if path == "/trickle":
                chunks = _int_param(query, "chunks", default=10, low=0, high=MAX_CHUNKS)
                interval = _int_param(
                    query, "interval_ms", default=0, low=0, high=MAX_MS
                )
                headers = [("Content-Type", "text/plain")]
                if _int_param(query, "chunked", default=0, low=0, high=1) == 0:
                    length = chunks * len(TRICKLE_CHUNK)
                    headers.append(("Content-Length", str(length)))
                start_response("200 OK", headers)
                return _trickle(chunks, interval)
            if path == "/hostile":
                mode = (query.get("mode") or [""])[0]
                ms = _int_param(query, "ms", default=300, low=0, high=MAX_MS)
                return _hostile(mode, ms, environ, start_response)
            if path == "/headers":
                sent = {
                    key[5:].replace("_", "-").lower(): value
                    for key, value in environ.items()
                    if key.startswith("HTTP_")
                }
                return _json(start_response, 200, sent)
            if path == "/stats":
                with lock:
                    snapshot = {"requests": dict(counts), "connections": len(clients)}
                return _json(start_response, 200, snapshot)
            if path == "/stats/reset":
                with lock:
                    counts.clear()
                    clients.clear()
                return _json(start_response, 200, {"requests": {}, "connections": 0})
        except BadParam as exc:
            return _json(
                start_response, 400, {"error": exc.message, "param": exc.param}
            )
        return _json(start_response, 404, {"error": "not found", "path": path})

    return app


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to listen on {host!r}: the stub upstream only binds loopback "
            "addresses (127.0.0.0/8, ::1, localhost)"
        )


def serve(
    host: str,
    port: int,
    *,
    backlog: int | None = None,
    access_log: bool = False,
) -> None:
    """Serve the stub upstream on ``host:port`` until SIGTERM or SIGINT.

    Prints ``upstream listening on http://HOST:PORT`` once bound (with the real
    port when ``port`` is 0). Raises ValueError for a non-loopback ``host``.
    """
    _check_loopback(host)
    server = WSGIServer(
        (host, port),
        make_app(),
        backlog=backlog,
        log="default" if access_log else None,
        handler_class=_StubHandler,
    )
    server.start()
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"upstream listening on http://{shown}:{server.server_port}", flush=True)
    stop.wait()
    # In-flight requests get at most a second; a /delay?ms=60000 must not block exit.
    server.stop(timeout=1)


def main(argv: list[str] | None = None) -> int:
    """Parse command-line arguments, run the server, and return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address only")
    # pywsgi's default of 128 overflows when a load test opens thousands of
    # connections at once: SYNs are dropped and clients' connects time out.
    parser.add_argument(
        "--backlog", type=int, default=4096, help="listen() backlog (default 4096)"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request to stderr"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.backlog < 1:
        parser.error(f"--backlog must be positive, got {args.backlog}")
    try:
        _check_loopback(args.host)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(args.host, args.port, backlog=args.backlog, access_log=args.access_log)
    except OSError as exc:
        # Typically "address already in use"; a traceback adds nothing.
        print(
            f"upstream: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
