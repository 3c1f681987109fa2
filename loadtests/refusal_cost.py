"""``python -m loadtests.refusal_cost``: the CPU one refusal costs a worker.

At three times its capacity a worker refuses two requests for each it
serves, and what a refusal costs comes out of what the admitted requests get.
One worker has its limit held at 4 (``SHED_MAX_LIMIT``) and its 4 slots taken
by ten-second requests that cost no CPU (``/demo/delay/``, from the same
client, so the fair share lends nothing); an open model (h2load) then drives
W1 at two ``--rates`` (100 and 2,000 req/s), every request refused. The cost
of a refusal is the worker's extra CPU time at the higher rate over the extra
refusals, so what the worker spends anyway (its control loop) cancels out. In
the same rounds, the same rates against the rival: gunicorn's stock gevent
worker answering every request with a canned 503 from a bare WSGI callable
(``loadtests/floor``), what a refusal costs at the least when gunicorn parses
the request and builds its environ. With ``--tree`` another checkout of the
project (a before/after comparison) is measured in the same rounds too.

Printed: µs of worker CPU per refusal, per round and the median, and each
as a ratio of the rival's. Exit status 0; 2 without h2load on PATH.

Usage: ``python -m loadtests.refusal_cost [--rounds 3] [--seconds 15]
[--rates 100,2000] [--tree PATH]``
"""

import argparse
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from devtools.processes import BASE_DIR, Processes
from loadtests.harness.paths import REPORTS
from loadtests.harness.servers import database_url, start_refusing, start_server
from loadtests.harness.workloads.fanout import workers_cpu_seconds
from loadtests.openloop import run_open
from loadtests.storm import WORKLOADS

# The service's limit, held low so that nearly every request is refused.
PINNED_LIMIT = "4"
RIVAL = "gunicorn + canned 503"
# The slots' holders' requests: long, and no CPU while they last.
HOLD_S = 10
HOLD_PATH = f"/demo/delay/?ms={HOLD_S * 1000}"
# Driven at the lower rate first, unmeasured.
WARMUP_S = 3.0


class SlotHolders:
    """``count`` connections that keep asking ``url`` for a slow answer, so
    the worker's slots stay taken, until ``stop()``."""

    def __init__(self, url: str, count: int) -> None:
        self._url = url
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._hold, daemon=True) for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _hold(self) -> None:
        with requests.Session() as session:
            while not self._stopped.is_set():
                try:
                    session.get(self._url, timeout=HOLD_S + 5)
                except requests.RequestException:
                    time.sleep(0.1)

    def stop(self) -> None:
        """Ask no more (the server's stop ends what is in flight)."""
        self._stopped.set()


def refusal_cost(
    url: str, master: int, rates: tuple[float, float], seconds: float
) -> float:
    """µs of worker CPU (of gunicorn ``master``) per refusal between the two
    ``rates`` at ``url``."""
    # A fresh worker loads what its first requests need: not a refusal's cost.
    run_open(url, rates[0], WARMUP_S, 0.0)
    spent = []
    refused = []
    for rate in rates:
        before = workers_cpu_seconds(master)
        run = run_open(url, rate, seconds, 0.0)
        spent.append(workers_cpu_seconds(master) - before)
        refused.append(run.refused)
    extra = refused[1] - refused[0]
    if extra <= 0:
        raise RuntimeError(f"no more refusals at {rates[1]} than at {rates[0]}")
    return (spent[1] - spent[0]) / extra * 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rates", default="100,2000")
    parser.add_argument("--tree", type=Path, help="another checkout, measured too")
    args = parser.parse_args(argv)
    rates = tuple(float(rate) for rate in args.rates.split(","))
    if len(rates) != 2 or not 0 < rates[0] < rates[1]:
        parser.error("--rates takes two rates, the lower first")
    args.rates = rates
    return args


def main(argv: list[str] | None = None) -> int:
    """Every round, then the medians; 0 once printed."""
    args = parse_args(argv)
    if not shutil.which("h2load"):
        print("h2load is not on PATH (Debian: nghttp2-client)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    costs: dict[str, list[float]] = {}
    with Processes(log_dir=REPORTS / f"{stamp}-refusal-cost") as processes:
        upstream = processes.start_upstream()

        def service(tree: Path) -> Callable[[], str]:
            env = {"DEMO_UPSTREAM_URL": upstream, "SHED_MAX_LIMIT": PINNED_LIMIT}

            return lambda: start_server(
                processes, database_url=database_url(), workers=1, env=env, tree=tree
            )

        servers = {
            "this tree": service(BASE_DIR),
            RIVAL: lambda: start_refusing(processes),
        }
        if args.tree:
            servers[str(args.tree)] = service(args.tree)
        for number in range(args.rounds):
            for name, start in servers.items():
                base = start()
                holders = (
                    SlotHolders(base + HOLD_PATH, int(PINNED_LIMIT))
                    if name != RIVAL
                    else None
                )
                try:
                    time.sleep(1.0)  # the holders are in
                    master = processes.servers[base].pid
                    url = base + WORKLOADS["W1"].path
                    cost = refusal_cost(url, master, args.rates, args.seconds)
                finally:
                    if holders is not None:
                        holders.stop()
                    processes.stop(processes.servers.pop(base))
                costs.setdefault(name, []).append(cost)
                print(f"round {number + 1}: {name}: {cost:.0f} µs", flush=True)
    rival = statistics.median(costs[RIVAL])
    print()
    print("| worker | µs of CPU per refusal (rounds) | median | / rival |")
    print("|---|---|---|---|")
    for name, values in costs.items():
        middle = statistics.median(values)
        rounds = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {name} | {rounds} | {middle:.0f} | {middle / rival:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
