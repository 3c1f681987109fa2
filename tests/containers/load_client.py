"""A bounded closed-loop load for the restart test, as its own process (plain
threads, no gevent): ``python -m tests.containers.load_client URL CONNECTIONS
SECONDS``. Each connection sends a GET, waits for the answer, sends the next,
keeping its connection alive until the server says ``Connection: close``.

Prints one JSON object: ``ok`` (2xx answers), ``refused`` (the connect was
refused: nothing listened; the request is tried again after 50 ms, it was
never the server's), ``lost`` (the connect succeeded and the request was
sent, and no complete answer came back, or a non-2xx one: a reset counts
here, on a fresh connection as on a kept-alive one), and the first errors.
"""

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def _worker(url: str, until: float, counts: dict, lock: threading.Lock) -> None:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < until:
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            try:
                conn.connect()
            except ConnectionRefusedError:
                conn = None
                with lock:
                    counts["refused"] += 1
                time.sleep(0.05)
                continue
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
        except OSError as exc:
            conn.close()
            conn = None
            with lock:
                counts["lost"] += 1
                counts["errors"].append(repr(exc))
            continue
        with lock:
            if 200 <= response.status < 300:
                counts["ok"] += 1
            else:
                counts["lost"] += 1
                counts["errors"].append(f"status {response.status}")
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = None


def main() -> None:
    """Run the load; print the counts as JSON."""
    url, connections, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    counts: dict = {"ok": 0, "refused": 0, "lost": 0, "errors": []}
    lock = threading.Lock()
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_worker, args=(url, until, counts, lock))
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts["errors"] = counts["errors"][:10]
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
