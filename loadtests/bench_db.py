"""``make bench-db``: W2 (slow SQL) on gevent + pool against a gthread baseline.

Starts, on loopback, the project's gunicorn twice per round: 2 gevent workers
with the pooled backend (32 connections each), then 2 ``gthread`` workers (32
threads, Django's own backend, ``CONN_MAX_AGE=60``, so also up to 32 each), and
drives each with Locust (``slow_sql.py``) at 10, 100 and 400 users. Prints
requests/s, p50, p99, failures and peak PostgreSQL backends per run, then the
medians over rounds and the gevent/gthread ratio measured in the same round.
Every process it starts, it stops. Uses the embedded development cluster
unless DATABASE_URL is set.

Usage: ``python -m loadtests.bench_db [--rounds 3] [--seconds 20] [--users 10,100,400]``
"""

import argparse
import csv
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import requests

BASE_DIR = Path(__file__).resolve().parent.parent
APPLICATION_NAME = "bench-db"

MODES = {
    # The same database budget for both: 32 connections per worker (the pool's
    # default of 20 would cap gevent at 2 x 20 / 50 ms = 800 req/s by Little's law).
    "gevent": {"args": [], "env": {"DB_POOL_SIZE": "32"}},
    "gthread": {
        "args": ["--worker-class", "gthread", "--threads", "32"],
        "env": {"GEVENT_PATCH": "0", "DB_POOL_SIZE": "0", "DB_CONN_MAX_AGE": "60"},
    },
}


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """DATABASE_URL, or the (started) embedded development cluster."""
    url = os.environ.get("DATABASE_URL", "")
    if url:
        return url
    from project import embedded_pg

    return embedded_pg.ensure_running()


def start_server(mode: str, url: str) -> tuple[subprocess.Popen, str]:
    """Start gunicorn in ``mode`` and wait for /healthz; return (process, base URL)."""
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DEBUG": "false",
        "DATABASE_URL": url,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_ACCESS_LOG": "",
        "DB_APPLICATION_NAME": APPLICATION_NAME,
        **MODES[mode]["env"],
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            *MODES[mode]["args"],
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except requests.RequestException:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"{mode} server did not start")


def stop(process: subprocess.Popen) -> None:
    """Stop a process we started and wait for it."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PeakBackends(threading.Thread):
    """Samples this benchmark's backends in pg_stat_activity every 0.2 s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.peak = 0
        self.running = True

    def run(self) -> None:
        """Sample until stopped."""
        conn = psycopg2.connect(self.url, connect_timeout=5, application_name="sampler")
        conn.autocommit = True
        with conn.cursor() as cursor:
            while self.running:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [APPLICATION_NAME],
                )
                self.peak = max(self.peak, cursor.fetchone()[0])
                time.sleep(0.2)
        conn.close()


def locust_command(locustfile: str, base: str, users: int, seconds: int) -> list[str]:
    """Headless Locust on ``loadtests/<locustfile>``, all users at once."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(BASE_DIR / "loadtests" / locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "-H",
        base,
        "--only-summary",
        "--stop-timeout",
        "5",
    ]


def run_locust(
    locustfile: str,
    base: str,
    users: int,
    seconds: int,
    prefix: Path,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """One headless run, CSV under ``prefix``; returns req/s, p50, p99 and counts."""
    subprocess.run(
        [*locust_command(locustfile, base, users, seconds), "--csv", str(prefix)],
        cwd=BASE_DIR,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=seconds + 120,
        check=False,
    )
    with open(f"{prefix}_stats.csv") as stats:
        row = next(r for r in csv.DictReader(stats) if r["Name"] == "Aggregated")
    return {
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", default="10,100,400")
    args = parser.parse_args(argv)
    users = [int(u) for u in args.users.split(",")]
    url = database_url()
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(1, args.rounds + 1):
            for mode in MODES:
                process, base = start_server(mode, url)
                try:
                    for count in users:
                        sampler = PeakBackends(url)
                        sampler.start()
                        result = run_locust(
                            "slow_sql.py",
                            base,
                            count,
                            args.seconds,
                            Path(tmp) / f"u{count}",
                        )
                        sampler.running = False
                        sampler.join()
                        result["peak_backends"] = sampler.peak
                        results.setdefault((mode, count), []).append(result)
                        print(
                            f"round {round_number} {mode:7} {count:4} users: "
                            f"{result['rps']:7.1f} req/s  p50 {result['p50']:5.0f} ms  "
                            f"p99 {result['p99']:6.0f} ms  "
                            f"failures {result['failures']}  "
                            f"peak backends {sampler.peak}",
                            flush=True,
                        )
                finally:
                    stop(process)
    print(f"\nW2 /demo/slow-sql/?ms=50, 2 workers, medians of {args.rounds} rounds")
    print(
        "| users | mode | req/s | p50 ms | p99 ms | failures | peak backends | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count in users:
        ratios = [
            g["rps"] / t["rps"]
            for g, t in zip(
                results[("gevent", count)], results[("gthread", count)], strict=True
            )
            if t["rps"]
        ]
        for mode in MODES:
            runs = results[(mode, count)]
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            ratio = (
                f"{statistics.median(ratios):.2f}x"
                if mode == "gevent" and ratios
                else ""
            )
            print(
                f"| {count} | {mode} | {med['rps']:.0f} | {med['p50']:.0f} | "
                f"{med['p99']:.0f} | {med['failures']:.0f} | "
                f"{med['peak_backends']:.0f} | {ratio} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
