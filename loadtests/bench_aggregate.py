"""``make bench-aggregate``: the aggregation API under Locust at 10, 100, 400 users.

Starts, on loopback, the stub upstream and the project's gunicorn (2 gevent
workers, ``loadtests/aggregations_bench.toml``: 5 HTTP sources on the stub and
1 SQL source, 50 ms each) and drives ``/api/aggregate/bench/`` with
``aggregate.py``. Prints req/s, p50, p99 and failures per run, the slowest
source's p50 measured in the same run, and the overhead: p50 over the 50 ms
floor (the slowest source's nominal latency; goal ≤ 1.15 at 10 users) and over
the measured slowest source. Medians over rounds. Every process it starts, it
stops. Uses the embedded development cluster unless DATABASE_URL is set.
Run it under the shared lock: ``flock /tmp/bench.lock make bench-aggregate``.

Usage: ``python -m loadtests.bench_aggregate [--rounds 3] [--seconds 20]
[--users 10,100,400]``
"""

import csv
import statistics
import sys
import tempfile
from pathlib import Path

from loadtests.harness.bench import bench_parser, headline
from loadtests.harness.locust_run import read_stats_csv, run_locust
from loadtests.harness.paths import AGGREGATIONS_BENCH
from loadtests.harness.processes import Processes, database_url

FLOOR_MS = 50
TOKEN = "bench-token-0123456789"


def start_server(processes: Processes, db_url: str, stub_url: str) -> str:
    """Start gunicorn (2 gevent workers) on the bench registry; return its URL."""
    return processes.start_gunicorn(
        database_url=db_url,
        env={
            "DB_POOL_SIZE": "32",
            "AGGREGATIONS_FILE": str(AGGREGATIONS_BENCH),
            "AGGREGATION_API_TOKENS": TOKEN,
            "DEMO_UPSTREAM_URL": stub_url,
        },
    )


def measure(
    processes: Processes, base: str, users: int, seconds: int, report_dir: Path
) -> dict:
    """One headless run; req/s, p50, p99, failures, and the slowest source's p50."""
    run = run_locust(
        processes,
        ["aggregate.py"],
        host=base,
        users=users,
        seconds=seconds,
        report_dir=report_dir,
        env={"AGG_BENCH_TOKEN": TOKEN},
    )
    rows = read_stats_csv(run.report_dir)
    request, slowest = rows["/api/aggregate/bench/"], rows["slowest source"]
    with open(run.report_dir / "locust_failures.csv") as failures:
        kinds = {
            row["Error"].removeprefix("CatchResponseError(").strip("')"): int(
                row["Occurrences"]
            )
            for row in csv.DictReader(failures)
        }
    return {
        "kinds": kinds,
        **headline(request),
        "source_p50": float(slowest["50%"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table."""
    parser = bench_parser(__doc__)
    args = parser.parse_args(argv)
    users = args.users
    db_url = database_url()
    results: dict[int, list[dict]] = {count: [] for count in users}
    with Processes() as processes, tempfile.TemporaryDirectory() as tmp:
        stub_url = processes.start_upstream()
        for round_number in range(1, args.rounds + 1):
            base = start_server(processes, db_url, stub_url)
            for count in users:
                report_dir = Path(tmp) / f"r{round_number}-u{count}"
                result = measure(processes, base, count, args.seconds, report_dir)
                results[count].append(result)
                print(
                    f"round {round_number} {count:4} users: "
                    f"{result['rps']:7.1f} req/s  p50 {result['p50']:5.0f} ms  "
                    f"p99 {result['p99']:6.0f} ms  "
                    f"failures {result['failures']} {result['kinds'] or ''}  "
                    f"slowest source p50 {result['source_p50']:5.0f} ms",
                    flush=True,
                )
            processes.stop(processes.servers.pop(base))
    print(
        f"\n/api/aggregate/bench/ (5 HTTP + 1 SQL, {FLOOR_MS} ms each), 2 workers, "
        f"medians of {args.rounds} rounds"
    )
    print(
        "| users | req/s | p50 ms | p99 ms | failures | slowest source p50 ms "
        f"| p50 / {FLOOR_MS} ms | p50 / slowest source |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count in users:
        runs = results[count]
        med = {
            key: statistics.median(r[key] for r in runs)
            for key in runs[0]
            if key != "kinds"
        }
        over_source = statistics.median(r["p50"] / r["source_p50"] for r in runs)
        print(
            f"| {count} | {med['rps']:.0f} | {med['p50']:.0f} | {med['p99']:.0f} | "
            f"{med['failures']:.0f} | {med['source_p50']:.0f} | "
            f"{med['p50'] / FLOOR_MS:.2f}x | {over_source:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
