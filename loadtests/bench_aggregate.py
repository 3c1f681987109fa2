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

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtests.bench_db import BASE_DIR, database_url, free_port, locust_command, stop
from loadtests.bench_fanout import stub_upstream, wait_until_up

FLOOR_MS = 50
TOKEN = "bench-token-0123456789"


def start_server(db_url: str, stub_url: str) -> tuple[subprocess.Popen, str]:
    """Start gunicorn (2 gevent workers) on the bench registry: (process, URL)."""
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DEBUG": "false",
        "DATABASE_URL": db_url,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_ACCESS_LOG": "",
        "DB_POOL_SIZE": "32",
        "AGGREGATIONS_FILE": str(BASE_DIR / "loadtests" / "aggregations_bench.toml"),
        "AGGREGATION_API_TOKENS": TOKEN,
        "BENCH_UPSTREAM_URL": stub_url,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/healthz", process, "gunicorn")
    return process, url


def run_locust(base: str, users: int, seconds: int, workdir: Path) -> dict[str, float]:
    """One headless run; req/s, p50, p99, failures, and the slowest source's p50."""
    prefix = workdir / f"u{users}"
    subprocess.run(
        [*locust_command("aggregate.py", base, users, seconds), "--csv", str(prefix)],
        cwd=BASE_DIR,
        env={**os.environ, "AGG_BENCH_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=seconds + 120,
        check=False,
    )
    with open(f"{prefix}_stats.csv") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    request, slowest = rows["/api/aggregate/bench/"], rows["slowest source"]
    with open(f"{prefix}_failures.csv") as failures:
        kinds = {
            row["Error"].removeprefix("CatchResponseError(").strip("')"): int(
                row["Occurrences"]
            )
            for row in csv.DictReader(failures)
        }
    return {
        "kinds": kinds,
        "rps": float(request["Requests/s"]),
        "p50": float(request["50%"]),
        "p99": float(request["99%"]),
        "failures": int(request["Failure Count"]),
        "source_p50": float(slowest["50%"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", default="10,100,400")
    args = parser.parse_args(argv)
    users = [int(u) for u in args.users.split(",")]
    db_url = database_url()
    results: dict[int, list[dict]] = {count: [] for count in users}
    with stub_upstream() as stub_url, tempfile.TemporaryDirectory() as tmp:
        for round_number in range(1, args.rounds + 1):
            server, base = start_server(db_url, stub_url)
            try:
                for count in users:
                    result = run_locust(base, count, args.seconds, Path(tmp))
                    results[count].append(result)
                    print(
                        f"round {round_number} {count:4} users: "
                        f"{result['rps']:7.1f} req/s  p50 {result['p50']:5.0f} ms  "
                        f"p99 {result['p99']:6.0f} ms  "
                        f"failures {result['failures']} {result['kinds'] or ''}  "
                        f"slowest source p50 {result['source_p50']:5.0f} ms",
                        flush=True,
                    )
            finally:
                stop(server)
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
