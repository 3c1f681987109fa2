"""What a checkout and a query cost, our pool against Django's psycopg 3 pool.

``make bench-db --compare pg3pool`` compares whole servers, where the pool is
one part of a request among the middleware, the worker and admission control,
and the ratio moves by ±5 % from run to run on a shared machine. This
measures the pool and the driver alone, in CPU time, with nothing around them:
each round runs one child process per side (the order alternating), gevent
patched and Django set up on the bench's database with a pool of ``POOL_SIZE``
connections, 32 greenlets working at once as 32 requests would:

* ``checkout + checkin``: a fresh database wrapper (Django makes one per
  greenlet, so per request) connects and closes, taking a connection from its
  pool and giving it back;
* ``query``: ``SELECT %s::int * %s::int`` through Django's cursor, one round
  trip on a connection already out;
* ``request``: both, as one ``/demo/slow-sql/`` request does;
* ``request, in line``: the same on three times as many greenlets as
  connections, so most checkouts wait in the pool's line for one given back.

``ours`` is the service's backend (psycopg2, psycogreen, ``project.core.pg_pool``,
its session tracking, metrics on, its test settings); ``pg3pool`` is the
rival of ``loadtests/pg3pool/`` in its own venv (built on first use).
Printed: each round's microseconds of CPU per operation, then the medians and
the medians of the same-round ratios, ours over the rival's.

Usage: ``python -m loadtests.pool_cost [--rounds 5] [--ops 4000]``
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Connections a pool, and greenlets at work at once: the bench's budget.
POOL_SIZE = 32
GREENLETS = 32
SIDES = ("ours", "pg3pool")
IN_LINE = "request, in line"
OPERATIONS = ("checkout + checkin", "query", "request", IN_LINE)
# Greenlets a connection for IN_LINE.
IN_LINE_SHARE = 3
# Operations run first and not counted: connections opened, code warm.
WARMUP_OPS = 500


def _setup(side: str) -> None:
    """Patch gevent and set Django up for ``side`` (in the child, first thing)."""
    if side == "ours":
        from project import green

        green.patch()
        os.environ.setdefault("ENVIRONMENT", "test")
        import settings

        settings.select()
    else:
        from gevent import monkey

        monkey.patch_all()
        os.environ["DJANGO_SETTINGS_MODULE"] = "loadtests.pg3pool.settings"
    os.environ["DB_POOL_SIZE"] = str(POOL_SIZE)
    import django

    django.setup()


def _operations() -> dict[str, Callable[[], None]]:
    from django.db import connection, connections

    def cycle() -> None:
        wrapper = connections.create_connection("default")
        wrapper.ensure_connection()
        wrapper.close()

    def query() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::int * %s::int", [7, 7])
            cursor.fetchone()

    def request() -> None:
        wrapper = connections.create_connection("default")
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT %s::int * %s::int", [7, 7])
            cursor.fetchone()
        wrapper.close()

    return dict(zip(OPERATIONS, (cycle, query, request, request), strict=True))


def _cpu_us(operation: Callable[[], None], ops: int, greenlets: int) -> float:
    """CPU microseconds per ``operation``, ``ops`` of them on ``greenlets``."""
    import gevent
    from django.db import connection

    def work(count: int) -> None:
        try:
            for _ in range(count):
                operation()
        finally:
            # The greenlet's own connection (``query``'s) goes back: psycopg_pool
            # would count it out for good once the greenlet is gone.
            connection.close()

    def run(total: int) -> None:
        share = total // greenlets
        gevent.joinall(
            [gevent.spawn(work, share) for _ in range(greenlets)], raise_error=True
        )

    run(WARMUP_OPS)
    started = time.process_time()
    run(ops)
    return (time.process_time() - started) / (ops // greenlets * greenlets) * 1e6


def child(side: str, ops: int) -> dict[str, float]:
    """One side's CPU per operation (run in a process of its own)."""
    _setup(side)
    return {
        name: _cpu_us(op, ops, GREENLETS * (IN_LINE_SHARE if name == IN_LINE else 1))
        for name, op in _operations().items()
    }


def _run_side(side: str, ops: int, database_url: str) -> dict[str, float]:
    if side == "ours":
        python = sys.executable
    else:
        from loadtests.harness.pg3pool_venv import ensure_venv

        python = str(ensure_venv())
    result = subprocess.run(
        [python, "-m", "loadtests.pool_cost", "--child", side, "--ops", str(ops)],
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(BASE_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise RuntimeError(f"{side} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Rounds and operations per measurement (``--child`` is the tool's own)."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.pool_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the figures."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.ops)))
        return 0
    from loadtests.harness.servers import database_url

    url = database_url()
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(args.rounds):
        order = SIDES if number % 2 == 0 else SIDES[::-1]
        figures = {side: _run_side(side, args.ops, url) for side in order}
        rounds.append(figures)
        ours, theirs = figures["ours"], figures["pg3pool"]
        cells = [
            f"{name} {ours[name]:.1f} / {theirs[name]:.1f} us" for name in OPERATIONS
        ]
        print(f"round {number + 1}: " + "; ".join(cells), flush=True)
    print(
        f"\nCPU per operation, {GREENLETS} greenlets, pools of {POOL_SIZE}, "
        f"medians of {args.rounds} rounds"
    )
    print("| operation | ours us | pg3pool us | ours / pg3pool |")
    print("|---|---|---|---|")
    for name in OPERATIONS:
        mine = statistics.median(r["ours"][name] for r in rounds)
        rival = statistics.median(r["pg3pool"][name] for r in rounds)
        ratio = statistics.median(r["ours"][name] / r["pg3pool"][name] for r in rounds)
        print(f"| {name} | {mine:.1f} | {rival:.1f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
