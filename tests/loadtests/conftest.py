"""A tiny real HTTP/1.1 server that refuses as admission control does when full."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class ShedServer:
    """Its URL, the requests it saw, and every how many it admits (0: none)."""

    url: str
    count: int = 0
    admit_every: int = 0


@pytest.fixture
def shed_server() -> Iterator[ShedServer]:
    """A server answering 503 with ``X-Shed-Reason`` and ``Retry-After: 1``
    (admission control's refusal), or 200 for every ``admit_every``-th request."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle, each answer would
        # wait for the client's delayed ACK (40 ms) and cap the retry rate.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            with lock:
                state.count += 1
                admitted = state.admit_every and state.count % state.admit_every == 0
            body = b'{"square": 49}' if admitted else b'{"detail": "overloaded"}'
            self.send_response(200 if admitted else 503)
            if not admitted:
                self.send_header("X-Shed-Reason", "concurrency")
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet: thousands of refusals would flood the test output."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = ShedServer(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
