"""A real redis-server of the test's own, on a free loopback port, stopped by pid."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from devtools.ports import free_port
from devtools.processes import stop as stop_process

# Debian puts it in /usr/bin; look there too when PATH lacks it.
REDIS_SERVER = shutil.which("redis-server") or next(
    (path for path in ("/usr/bin/redis-server",) if os.access(path, os.X_OK)), None
)


class RedisServer:
    """redis-server on ``127.0.0.1:port``, no persistence; restartable on that port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 10 s")
            time.sleep(0.02)

    def ping(self) -> bool:
        """Whether it answers PING now."""
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop our redis-server (by its pid) and wait for it."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server of this test's own; skipped when the binary is missing."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(REDIS_SERVER)
    server.start()
    try:
        yield server
    finally:
        server.stop()
