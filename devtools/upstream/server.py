"""Stub upstream: a tiny gevent WSGI server the service fans out to in load tests.

This module is the server: pywsgi with our handler, on loopback only.
"""

import argparse
import ipaddress
import signal
import socket
import struct
import sys
from typing import Any

import gevent
import gevent.event
from gevent.pywsgi import WSGIHandler, WSGIServer

from devtools.upstream.app import make_app
from devtools.upstream.hostile import HOSTILE_MAX_BYTES
from devtools.upstream.responses import AbortConnection, RawReply


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
        prog="python -m devtools.upstream", description=__doc__.splitlines()[0]
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
