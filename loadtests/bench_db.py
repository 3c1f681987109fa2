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

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2

from loadtests.common.bench import bench_parser, headline
from loadtests.common.locust_run import read_stats_csv, run_locust
from loadtests.common.processes import Processes, database_url

APPLICATION_NAME = "bench-db"

# Server environment per mode (on top of processes.SERVER_MODES). The same
# database budget for both: 32 connections per worker (the pool's default of 20
# would cap gevent at 2 x 20 / 50 ms = 800 req/s by Little's law).
MODES = {
    "gevent": {"DB_POOL_SIZE": "32"},
    "gthread": {},
}


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


def measure(
    processes: Processes, base: str, users: int, seconds: int, workdir: Path
) -> dict[str, float]:
    """One headless Locust run; returns req/s, p50, p99 and failures (whole run)."""
    run = run_locust(
        processes,
        ["slow_sql.py"],
        host=base,
        users=users,
        seconds=seconds,
        report_dir=workdir / f"u{users}",
    )
    return headline(read_stats_csv(run.report_dir)["Aggregated"])


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table."""
    parser = bench_parser(__doc__)
    args = parser.parse_args(argv)
    users = args.users
    url = database_url()
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(1, args.rounds + 1):
            for mode, env in MODES.items():
                with Processes() as processes:
                    base = processes.start_gunicorn(
                        database_url=url,
                        mode=mode,
                        env={**env, "DB_APPLICATION_NAME": APPLICATION_NAME},
                    )
                    for count in users:
                        sampler = PeakBackends(url)
                        sampler.start()
                        result = measure(
                            processes, base, count, args.seconds, Path(tmp) / mode
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
