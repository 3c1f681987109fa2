"""``make bench-*``: one workload on several servers, side by side, in rounds.

Each round starts every server in turn on loopback (2 workers, the project's
``gunicorn.conf.py``), warms it with a short run it discards (``WARMUP_S``),
drives it with Locust at each user level, and stops it;
the stub upstream, when the workload needs one, serves every round. Then it
prints the medians over rounds and the ratios measured in the same round, so a
comparison on a noisy machine compares runs made side by side. Every process
and worktree it starts, it stops or removes. Uses the embedded development
cluster unless DATABASE_URL is set.

Workloads (``harness/workloads/``): W1 fan-out HTTP (``/demo/fan-out/?http=10&ms=50``),
W2 slow SQL (``/demo/slow-sql/?ms=50``), AGG the aggregation API. ``--compare``
(repeatable) adds a server: ``asyncio`` (the aiohttp baseline under uvicorn, W1
only), ``floor`` (a bare gevent WSGI fan-out, no Django: what W1 costs at the
least on this stack, W1 only), ``pg3pool`` (Django's own pool on psycopg 3
under gunicorn's gevent worker, on the budget of ``gevent pool 32``, W2 only;
its venv is built on first use), ``gthread`` (the threaded worker model; for W2
on both database budgets), this tree again with settings overridden
(``env:KEY=VALUE[,KEY=VALUE]``, e.g. ``env:METRICS_ENABLED=false``) or a git
revision of this repository, run from a temporary worktree.

Usage: ``python -m loadtests.bench --workload W1|W2|AGG
[--compare asyncio|floor|pg3pool|gthread|env:KEY=VALUE|REV]... [--rounds 3]
[--seconds 20] [--users 10,100,400]``
"""

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from devtools.processes import Processes
from loadtests.harness.bench_report import (
    Results,
    print_medians,
    print_ratios,
    progress_line,
)
from loadtests.harness.checkout import checkout
from loadtests.harness.servers import (
    SERVER_MODES,
    database_url,
    start_asyncio_baseline,
    start_floor,
    start_pg3pool,
    start_server,
)
from loadtests.harness.workloads import WORKLOADS
from loadtests.harness.workloads.base import (
    ASYNCIO,
    FLOOR,
    GTHREAD,
    PG3POOL,
    RIVALS,
    WORKERS,
    Server,
    Target,
    Workload,
    env_override,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The workload, what to compare it with, rounds, seconds and user levels."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workload", required=True, choices=list(WORKLOADS))
    parser.add_argument(
        "--compare",
        "--baseline",
        action="append",
        default=[],
        metavar="asyncio|floor|pg3pool|gthread|env:KEY=VALUE|REV",
        help="also run this server in the same rounds (repeatable)",
    )
    parser.add_argument(
        "--asyncio",
        dest="compare",
        action="append_const",
        const=ASYNCIO,
        help="the same as --compare asyncio",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--users",
        type=lambda text: [int(count) for count in text.split(",")],
        default=[10, 100, 400],
        help="comma-separated user levels (default 10,100,400)",
    )
    args = parser.parse_args(argv)
    for rival in RIVALS:
        if rival in args.compare and rival not in WORKLOADS[args.workload].rivals:
            served = ", ".join(w.name for w in WORKLOADS.values() if rival in w.rivals)
            parser.error(f"the {rival} rival serves {served} only, not {args.workload}")
    for item in args.compare:
        try:
            env_override(item)
        except ValueError as exc:
            parser.error(f"--compare {exc}")
    # A Make target's own --compare may come again in BENCH_ARGS.
    args.compare = list(dict.fromkeys(args.compare))
    return args


def start(
    processes: Processes, server: Server, workload: Workload, upstream: str, url: str
) -> str:
    """Start ``server`` for ``workload``; return its base URL."""
    if server.mode == ASYNCIO:
        return start_asyncio_baseline(processes, upstream=upstream, workers=WORKERS)
    if server.mode == FLOOR:
        return start_floor(processes, upstream=upstream, workers=WORKERS)
    if server.mode == PG3POOL:
        return start_pg3pool(
            processes,
            database_url=workload.server_database_url(url),
            pool_size=int(server.env["DB_POOL_SIZE"]),
            workers=WORKERS,
            env={**workload.server_env(upstream), **server.env},
        )
    # The worker model's own settings win over the workload's (gthread keeps
    # Django's backend), the server's own over both.
    env = {
        **workload.server_env(upstream),
        **SERVER_MODES[server.mode]["env"],
        **server.env,
    }
    return start_server(
        processes,
        database_url=workload.server_database_url(url),
        mode=server.mode,
        workers=WORKERS,
        env=env,
        args=list(server.args),
        tree=server.tree,
    )


# Seconds of load, at the first user level, that a fresh server gets before it is
# measured. Connections are placed when a run starts and kept to its end; on a
# cold server a burst of them lands on whichever worker is ready first (one
# pg3pool worker took 90 of 100 while the other opened its pool, and served
# half its budget for the whole run). After this both workers are warm: 49/51.
WARMUP_S = 3


def measure_warm(
    workload: Workload,
    target: Target,
    users_levels: list[int],
    seconds: int,
    run_dir: Path,
) -> list[tuple[int, dict]]:
    """A discarded warm-up run, then one measured run per user level."""
    workload.measure(target, users_levels[0], WARMUP_S, run_dir / "warmup")
    return [
        (users, workload.measure(target, users, seconds, run_dir / f"u{users}"))
        for users in users_levels
    ]


def run_rounds(
    workload: Workload,
    servers: list[Server],
    args: argparse.Namespace,
    workdir: Path,
    url: str,
) -> Results:
    """Every server in every round at every user level; each run's figures."""
    results: Results = {}
    # Servers' output kept: start_gunicorn waits for every worker in it.
    with Processes(log_dir=workdir / "servers") as processes:
        upstream = processes.start_upstream() if workload.needs_upstream else ""
        for round_number in range(1, args.rounds + 1):
            for index, server in enumerate(servers):
                base = start(processes, server, workload, upstream, url)
                target = Target(processes, base, upstream, url)
                run_dir = workdir / f"r{round_number}-s{index}"
                levels = measure_warm(
                    workload, target, args.users, args.seconds, run_dir
                )
                for users, result in levels:
                    results.setdefault((server.label, users), []).append(result)
                    line = progress_line(
                        workload, round_number, server.label, users, result
                    )
                    print(line, flush=True)
                processes.stop(processes.servers.pop(base))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the tables."""
    args = parse_args(argv)
    workload = WORKLOADS[args.workload]
    url = database_url()
    revisions = [
        item
        for item in args.compare
        if item not in (*RIVALS, GTHREAD) and env_override(item) is None
    ]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        # Entered before run_rounds' processes, so servers stop before trees go.
        trees = {rev: stack.enter_context(checkout(rev, workdir)) for rev in revisions}
        servers = workload.servers(args.compare, trees, url)
        results = run_rounds(workload, servers, args, workdir, url)
    print_medians(workload, servers, args, results)
    print_ratios(workload, workload.comparisons(servers), args.users, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
