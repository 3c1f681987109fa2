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
Every process and worktree it starts, it stops or removes.

Usage: ``python -m loadtests.bench_fanout [--rounds 3] [--seconds 20]
[--users 10,100,400] [--baseline REV]...``
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import requests

from loadtests.bench_db import BASE_DIR, database_url, free_port, run_locust, stop

LEGS = 10
LEG_MS = 50
WORKERS = 2


def wait_until_up(url: str, process: subprocess.Popen, what: str) -> None:
    """Poll ``url`` until it answers 200; fail if ``process`` exits or 30 s pass."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"{what} did not answer {url} within 30 s")


@contextmanager
def stub_upstream() -> Iterator[str]:
    """Run the stub upstream on a free loopback port; yield its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtests.upstream", "--port", str(port)],
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/stats", process, "stub upstream")
        yield url
    finally:
        stop(process)


@contextmanager
def gunicorn(tree: Path, upstream: str, db_url: str) -> Iterator[tuple[int, str]]:
    """Run ``tree``'s gunicorn with 2 gevent workers; yield (master pid, base URL)."""
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DEBUG": "false",
        "DATABASE_URL": db_url,
        "DEMO_UPSTREAM_URL": upstream,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(WORKERS),
        "GUNICORN_ACCESS_LOG": "",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/healthz", process, f"gunicorn in {tree}")
        yield process.pid, base
    finally:
        stop(process)


@contextmanager
def checkout(rev: str, workdir: Path) -> Iterator[Path]:
    """A temporary detached git worktree of ``rev``; removed afterwards."""
    tree = workdir / f"tree-{rev}"

    def git(*args: str) -> None:
        subprocess.run(
            ["git", *args], cwd=BASE_DIR, check=True, capture_output=True, timeout=60
        )

    git("worktree", "add", "--detach", str(tree), rev)
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))


def workers_cpu_seconds(master_pid: int) -> float:
    """User + system CPU seconds used so far by the master's worker processes."""
    total = 0.0
    for child in psutil.Process(master_pid).children():
        times = child.cpu_times()
        total += times.user + times.system
    return total


def run_w1(base: str, users: int, seconds: int, prefix: Path) -> dict:
    """One headless W1 run: Locust's figures plus its most frequent failure."""
    result: dict = run_locust(
        "fanout_http.py",
        base,
        users,
        seconds,
        prefix,
        env={"W1_LEGS": str(LEGS), "W1_MS": str(LEG_MS)},
    )
    with open(f"{prefix}_failures.csv") as failures:
        errors = sorted(csv.DictReader(failures), key=lambda r: -int(r["Occurrences"]))
    result["top_error"] = (
        f"{errors[0]['Occurrences']}x {errors[0]['Error']}" if errors else ""
    )
    return result


def measure(
    master_pid: int, base: str, upstream: str, users: int, seconds: int, prefix: Path
) -> dict[str, float]:
    """Run W1 once and add worker CPU per request and upstream connection counts."""
    requests.post(f"{upstream}/stats/reset", timeout=5)
    cpu_before = workers_cpu_seconds(master_pid)
    result = run_w1(base, users, seconds, prefix)
    cpu = workers_cpu_seconds(master_pid) - cpu_before
    connections = requests.get(f"{upstream}/stats", timeout=5).json()["connections"]
    result["cpu_ms"] = 1000 * cpu / max(result["requests"], 1)
    result["connections"] = connections
    result["excess"] = max(0, connections - users * LEGS)
    return result


def print_table(
    results: dict[tuple[str, int], list[dict]], labels: list[str], users: list[int]
) -> None:
    """Medians over rounds, one row per (users, tree), ratios against this tree."""
    print(
        f"\nW1 /demo/fan-out/?http={LEGS}&ms={LEG_MS}, {WORKERS} gevent workers, "
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", default="10,100,400")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REV",
        help="also run this git revision in the same rounds (repeatable)",
    )
    args = parser.parse_args(argv)
    users = [int(u) for u in args.users.split(",")]
    db_url = database_url()
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        trees = {"this tree": BASE_DIR}
        for rev in args.baseline:
            trees[rev] = stack.enter_context(checkout(rev, workdir))
        upstream = stack.enter_context(stub_upstream())
        for round_number in range(1, args.rounds + 1):
            for label, tree in trees.items():
                with gunicorn(tree, upstream, db_url) as (pid, base):
                    for count in users:
                        prefix = workdir / f"r{round_number}-{len(results)}"
                        result = measure(
                            pid, base, upstream, count, args.seconds, prefix
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
    print_table(results, list(trees), users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
