"""``make bench-db``: W2 (slow SQL) on gevent + pool against gthread baselines.

Starts, on loopback, the project's gunicorn four times per round, 2 workers
each: gevent with the pool on its defaults (sized from the database's budget),
gthread on its defaults (32 threads, Django's own backend, ``CONN_MAX_AGE=60``),
then each with the other's database budget (gevent with a pool of 32, gthread
with as many threads as our default pool), and drives each with Locust
(``slow_sql.py``) at 10, 100 and 400 users. Prints requests/s, p50, p99,
failures and peak PostgreSQL backends per run, then the medians over rounds and
the gevent/gthread ratios measured in the same round. ``--baseline REV``
(repeatable) also runs that commit with a pool of 32 in the same rounds. Every
process and worktree it starts, it stops. Uses the embedded development cluster
unless DATABASE_URL is set.

Usage: ``python -m loadtests.bench_db [--rounds 3] [--seconds 20]
[--users 10,100,400] [--baseline REV]...``
"""

import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg2

from loadtests.harness.bench import (
    add_baseline_option,
    bench_parser,
    checkout,
    headline,
)
from loadtests.harness.locust_run import read_stats_csv, run_locust
from loadtests.harness.paths import BASE_DIR
from loadtests.harness.processes import Processes, database_url

APPLICATION_NAME = "bench-db"

WORKERS = 2
# Django's default and ours: what the gthread baseline runs with.
GTHREAD_THREADS = 32


def runs(default_pool: int) -> dict[str, tuple[str, dict[str, str], list[str]]]:
    """Server mode, environment and extra gunicorn args per configuration."""
    return {
        "gevent": ("gevent", {}, []),
        "gthread": ("gthread", {}, []),
        f"gevent pool {GTHREAD_THREADS}": (
            "gevent",
            {"DB_POOL_SIZE": str(GTHREAD_THREADS)},
            [],
        ),
        f"gthread {default_pool} threads": (
            "gthread",
            {},
            ["--threads", str(default_pool)],
        ),
    }


# Which runs are compared (same round): defaults with defaults, and each
# worker model on the other's database budget.
def pairs(names: list[str]) -> list[tuple[str, str, str]]:
    """(label, gevent run, gthread run) for the ratio table."""
    gevent, gthread, gevent_small, gthread_big = names
    return [
        ("defaults", gevent, gthread),
        (f"budget of {gthread}", gevent_small, gthread),
        (f"budget of {gevent}", gevent, gthread_big),
    ]


def default_pool_size(url: str) -> int:
    """Connections per worker our pool takes by default on this database."""
    from project.core.pg_pool.base import budget_size

    conn = psycopg2.connect(url, connect_timeout=5, application_name="bench-sizer")
    try:
        return budget_size(conn, share=WORKERS, reserve=10)
    finally:
        conn.close()


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
    """Run the rounds and print the tables."""
    parser = bench_parser(__doc__)
    add_baseline_option(parser)
    args = parser.parse_args(argv)
    users = args.users
    url = database_url()
    configs = runs(default_pool_size(url))
    # (configuration, tree): a baseline revision runs gevent on gthread's
    # budget, the same as this tree's "gevent pool 32", to compare the pools.
    plan = [(name, BASE_DIR) for name in configs]
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for rev in args.baseline:
            tree = stack.enter_context(checkout(rev, Path(tmp)))
            name = f"{rev} pool {GTHREAD_THREADS}"
            configs[name] = configs[f"gevent pool {GTHREAD_THREADS}"]
            plan.append((name, tree))
        for round_number in range(1, args.rounds + 1):
            for name, tree in plan:
                mode, env, extra = configs[name]
                with Processes() as processes:
                    base = processes.start_gunicorn(
                        database_url=url,
                        mode=mode,
                        workers=WORKERS,
                        env={**env, "DB_APPLICATION_NAME": APPLICATION_NAME},
                        args=extra,
                        tree=tree,
                    )
                    for count in users:
                        sampler = PeakBackends(url)
                        sampler.start()
                        report_dir = Path(tmp) / f"r{round_number}-{len(results)}"
                        result = measure(
                            processes, base, count, args.seconds, report_dir
                        )
                        sampler.running = False
                        sampler.join()
                        result["peak_backends"] = sampler.peak
                        results.setdefault((name, count), []).append(result)
                        print(
                            f"round {round_number} {name:22} {count:4} users: "
                            f"{result['rps']:7.1f} req/s  p50 {result['p50']:5.0f} ms  "
                            f"p99 {result['p99']:6.0f} ms  "
                            f"failures {result['failures']}  "
                            f"peak backends {sampler.peak}",
                            flush=True,
                        )
    print(f"\nW2 /demo/slow-sql/?ms=50, {WORKERS} workers, medians of", end=" ")
    print(f"{args.rounds} rounds")
    print("| users | run | req/s | p50 ms | p99 ms | failures | peak backends |")
    print("|---|---|---|---|---|---|---|")
    for count in users:
        for name in configs:
            runs_ = results[(name, count)]
            med = {key: statistics.median(r[key] for r in runs_) for key in runs_[0]}
            print(
                f"| {count} | {name} | {med['rps']:.0f} | {med['p50']:.0f} | "
                f"{med['p99']:.0f} | {med['failures']:.0f} | "
                f"{med['peak_backends']:.0f} |"
            )
    print("\nmedians of the same-round ratios")
    print("| users | comparison | req/s ratio | p99 ratio |")
    print("|---|---|---|---|")
    for count in users:
        comparisons = pairs(list(configs)[:4]) + [
            (f"this tree / {rev} (pool {GTHREAD_THREADS})", list(configs)[2], name)
            for rev, name in zip(args.baseline, list(configs)[4:], strict=True)
        ]
        for label, ours, theirs in comparisons:
            rows = list(
                zip(results[(ours, count)], results[(theirs, count)], strict=True)
            )
            rps = [g["rps"] / t["rps"] for g, t in rows if t["rps"]]
            p99 = [g["p99"] / t["p99"] for g, t in rows if t["p99"]]
            print(
                f"| {count} | {label} | {statistics.median(rps):.2f}x | "
                f"{statistics.median(p99):.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
