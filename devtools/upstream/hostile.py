"""``/hostile?mode=M``: an upstream that misbehaves in one chosen way.

Raw modes raise ``RawReply`` with an endless byte stream the handler writes
straight to the socket; answer modes give a complete 200 that is wrong in one
way (see the package's docstring for the list).
"""

import gzip
import json
import socket
from collections.abc import Callable, Iterable, Iterator

import gevent

from devtools.upstream.responses import (
    MAX_MS,
    BadParam,
    Environ,
    Query,
    RawReply,
    StartResponse,
    int_param,
)

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


def hostile(
    query: Query, environ: Environ, start_response: StartResponse
) -> Iterable[bytes]:
    """The endpoint: the ``mode`` asked for (``ms`` delays the stray bytes)."""
    mode = (query.get("mode") or [""])[0]
    ms = int_param(query, "ms", default=300, low=0, high=MAX_MS)
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
