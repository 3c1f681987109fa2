"""Slow and idle clients against one gevent worker: does ``/healthz`` stay fast?

Starts the project's gunicorn with one worker on loopback, opens N connections
that never finish a request (half send a partial request line and then one
header byte every second, half send nothing), and while they are held probes
``/healthz`` from a fresh connection 20 times. Prints the probes' median and
worst latency and how many slow connections the server had closed, per N.
``--baseline REV`` runs another commit the same way. Raises this process's
file-descriptor soft limit as far as the hard one allows.

Usage: ``python -m loadtests.slowloris [--idle 1100,3000] [--hold 8]
[--baseline REV]``
"""

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

from devtools.processes import Processes  # noqa: E402
from loadtests.harness.checkout import checkout  # noqa: E402
from loadtests.harness.paths import BASE_DIR  # noqa: E402
from loadtests.harness.servers import database_url, start_server  # noqa: E402


def _slow_client(port: int, trickle: bool, until: float, closed: list[int]) -> None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    except OSError:
        closed[0] += 1
        return
    try:
        if trickle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while time.monotonic() < until:
            gevent.sleep(1.0)
            if trickle:
                sock.sendall(b"a")
            elif sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                raise ConnectionError  # closed by the server
    except (OSError, ConnectionError):
        closed[0] += 1
    finally:
        sock.close()


def _probe(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return time.monotonic() - started


def measure(port: int, idle: int, hold: float) -> dict[str, float]:
    """Hold ``idle`` slow connections for ``hold`` s; probe /healthz meanwhile."""
    closed = [0]
    until = time.monotonic() + hold
    clients = [
        gevent.spawn(_slow_client, port, i % 2 == 0, until, closed) for i in range(idle)
    ]
    gevent.sleep(1.0)  # let them connect
    probes = []
    while time.monotonic() < until - 0.5 and len(probes) < 20:
        probes.append(_probe(port))
        gevent.sleep(0.2)
    gevent.joinall(clients, timeout=hold + 30)
    return {
        "median_ms": statistics.median(probes) * 1000,
        "worst_ms": max(probes) * 1000,
        "closed": closed[0],
    }


def main(argv: list[str] | None = None) -> int:
    """Run each tree at each level of idle connections and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", default="1100,3000")
    parser.add_argument("--hold", type=float, default=8.0)
    parser.add_argument("--baseline", action="append", default=[])
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.idle.split(",")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    url = database_url()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        trees = [("this tree", BASE_DIR)] + [
            (rev, stack.enter_context(checkout(rev, Path(tmp))))
            for rev in args.baseline
        ]
        for name, tree in trees:
            for idle in levels:
                with Processes() as processes:
                    base = start_server(
                        processes, database_url=url, workers=1, tree=tree
                    )
                    port = int(base.rsplit(":", 1)[1])
                    result = measure(port, idle, args.hold)
                rows.append((name, idle, result))
                print(
                    f"{name:10} {idle:5} slow connections: /healthz median "
                    f"{result['median_ms']:7.1f} ms, worst {result['worst_ms']:7.1f} "
                    f"ms; closed by the server {result['closed']}",
                    flush=True,
                )
    print("\n| tree | slow connections | /healthz median ms | worst ms | closed |")
    print("|---|---|---|---|---|")
    for name, idle, r in rows:
        print(
            f"| {name} | {idle} | {r['median_ms']:.1f} | {r['worst_ms']:.1f} | "
            f"{r['closed']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
