"""``make bench-fanout``: W1 (fan-out HTTP) on 2 gevent workers against the stub.

Starts, on loopback, the stub upstream and the project's gunicorn (2 gevent
workers, the project's own ``gunicorn.conf.py``), then drives
``/demo/fan-out/?http=10&ms=50`` with Locust (``fanout_http.py``) at 10, 100
and 400 users, several rounds. Per run it prints requests/s, p50, p99,
failures, worker CPU per request (user + system time of gunicorn's workers over
the run, divided by the requests served) and the upstream connections the
workers opened. A pool that keeps its connections needs at most users x legs of
them (each user holds one keep-alive connection to one worker, so at most that
many legs are in flight); anything above is a connection opened because one was
discarded, reported as ``excess``.

``--baseline REV`` (repeatable) runs the same rounds on another commit, checked
out in a temporary git worktree, against the same stub in the same round, so
the before/after table compares runs made side by side on a noisy machine.
``--asyncio`` does the same for the asyncio baseline
(``loadtests/asyncio_baseline``: a Django async view on aiohttp, 2 uvicorn
workers), the recipe gevent has to beat. Every process and worktree it starts,
it stops or removes.

Usage: ``python -m loadtests.bench_fanout [--rounds 3] [--seconds 20]
[--users 10,100,400] [--asyncio] [--baseline REV]...``
"""

import csv
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import psutil
import requests

from loadtests.harness.bench import (
    add_baseline_option,
    bench_parser,
    checkout,
    headline,
)
from loadtests.harness.locust_run import read_stats_csv, run_locust
from loadtests.harness.paths import BASE_DIR
from loadtests.harness.processes import Processes, database_url

LEGS = 10
LEG_MS = 50
WORKERS = 2
ASYNCIO = "asyncio"


def workers_cpu_seconds(master_pid: int) -> float:
    """User + system CPU seconds used so far by the master's worker processes."""
    total = 0.0
    for child in psutil.Process(master_pid).children():
        times = child.cpu_times()
        total += times.user + times.system
    return total


def measure(
    processes: Processes,
    base: str,
    upstream: str,
    users: int,
    seconds: int,
    report_dir: Path,
) -> dict:
    """Run W1 once: Locust's figures, its most frequent failure, worker CPU per
    request and the upstream connections the workers opened."""
    master_pid = processes.servers[base].pid
    requests.post(f"{upstream}/stats/reset", timeout=5)
    cpu_before = workers_cpu_seconds(master_pid)
    run = run_locust(
        processes,
        ["fanout_http.py"],
        host=base,
        users=users,
        seconds=seconds,
        report_dir=report_dir,
        env={"W1_LEGS": str(LEGS), "W1_MS": str(LEG_MS)},
    )
    cpu = workers_cpu_seconds(master_pid) - cpu_before
    connections = requests.get(f"{upstream}/stats", timeout=5).json()["connections"]
    row = read_stats_csv(run.report_dir)["Aggregated"]
    with open(run.report_dir / "locust_failures.csv") as failures:
        errors = sorted(csv.DictReader(failures), key=lambda r: -int(r["Occurrences"]))
    requests_served = int(row["Request Count"])
    return {
        "top_error": f"{errors[0]['Occurrences']}x {errors[0]['Error']}"
        if errors
        else "",
        **headline(row),
        "cpu_ms": 1000 * cpu / max(requests_served, 1),
        "connections": connections,
        "excess": max(0, connections - users * LEGS),
    }


def print_table(
    results: dict[tuple[str, int], list[dict]], labels: list[str], users: list[int]
) -> None:
    """Medians over rounds, one row per (users, tree), ratios against this tree."""
    print(
        f"\nW1 /demo/fan-out/?http={LEGS}&ms={LEG_MS}, {WORKERS} workers a server, "
        f"medians of {len(results[(labels[0], users[0])])} rounds"
    )
    print(
        "| users | tree | req/s | p50 ms | p99 ms | failures "
        "| worker CPU ms/req | upstream conns | excess conns |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for count in users:
        for label in labels:
            runs = results[(label, count)]
            med = {
                key: statistics.median(r[key] for r in runs)
                for key in runs[0]
                if key != "top_error"
            }
            print(
                f"| {count} | {label} | {med['rps']:.0f} | {med['p50']:.0f} | "
                f"{med['p99']:.0f} | {med['failures']:.0f} | {med['cpu_ms']:.2f} | "
                f"{med['connections']:.0f} | {med['excess']:.0f} |"
            )
    for label in labels[1:]:
        for count in users:
            pairs = list(
                zip(results[(labels[0], count)], results[(label, count)], strict=True)
            )
            cpu = statistics.median(b["cpu_ms"] / a["cpu_ms"] for a, b in pairs)
            rps = statistics.median(a["rps"] / b["rps"] for a, b in pairs if b["rps"])
            print(
                f"{count} users: this tree uses {cpu:.2f}x less CPU per request "
                f"and serves {rps:.2f}x the req/s of {label} (same-round medians)"
            )


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table."""
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--asyncio",
        action="store_true",
        help="also run the asyncio baseline (aiohttp under uvicorn) in the same rounds",
    )
    add_baseline_option(parser)
    args = parser.parse_args(argv)
    users = args.users
    db_url = database_url()
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        trees = {"this tree": BASE_DIR}
        for rev in args.baseline:
            trees[rev] = stack.enter_context(checkout(rev, workdir))
        # Entered after the checkouts, so it stops the servers before they go.
        processes = stack.enter_context(Processes())
        upstream = processes.start_upstream()
        servers: dict[str, Callable[[], str]] = {
            label: partial(
                processes.start_gunicorn,
                database_url=db_url,
                env={"DEMO_UPSTREAM_URL": upstream},
                workers=WORKERS,
                tree=tree,
            )
            for label, tree in trees.items()
        }
        if args.asyncio:
            servers[ASYNCIO] = partial(
                processes.start_asyncio_baseline, upstream=upstream, workers=WORKERS
            )
        for round_number in range(1, args.rounds + 1):
            for index, (label, start) in enumerate(servers.items()):
                base = start()
                for count in users:
                    report_dir = workdir / f"r{round_number}-t{index}-u{count}"
                    result = measure(
                        processes, base, upstream, count, args.seconds, report_dir
                    )
                    results.setdefault((label, count), []).append(result)
                    print(
                        f"round {round_number} {label:>10} {count:4} users: "
                        f"{result['rps']:6.1f} req/s  p50 {result['p50']:5.0f} ms"
                        f"  p99 {result['p99']:6.0f} ms  "
                        f"failures {result['failures']}  "
                        f"CPU {result['cpu_ms']:.2f} ms/req  "
                        f"conns {result['connections']} "
                        f"(excess {result['excess']})",
                        flush=True,
                    )
                    if result["top_error"]:
                        print(f"  most frequent failure: {result['top_error']}")
                processes.stop(processes.servers.pop(base))
    print_table(results, list(servers), users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
