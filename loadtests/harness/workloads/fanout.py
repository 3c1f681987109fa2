"""W1, fan-out HTTP: ``/demo/fan-out/?http=10&ms=50`` against the stub upstream.

Besides Locust's figures a run records the workers' CPU per request (user +
system time of the server's worker processes over the run, over the requests
served) and the upstream connections they opened. A pool that keeps its
connections needs at most users x legs of them (each user holds one keep-alive
connection to one worker, so at most that many legs are in flight); anything
above is a connection opened because one was discarded, reported as ``excess``.
"""

from pathlib import Path

import psutil
import requests

from loadtests.harness.locust_run import (
    admitted_headline,
    read_failures_csv,
    read_stats_csv,
)
from loadtests.harness.workloads.base import (
    ASYNCIO,
    FLOOR,
    Column,
    Ratio,
    Target,
    Workload,
)

LEGS = 10
LEG_MS = 50
ENDPOINT = "/demo/fan-out/ W1"  # fanout_http.py's name


def workers_cpu_seconds(master_pid: int) -> float:
    """User + system CPU seconds used so far by the master's worker processes."""
    total = 0.0
    for child in psutil.Process(master_pid).children():
        times = child.cpu_times()
        total += times.user + times.system
    return total


class FanOut(Workload):
    """W1 on this tree, against the asyncio baseline, gthread or other revisions."""

    name = "W1"
    title = f"W1 /demo/fan-out/?http={LEGS}&ms={LEG_MS}"
    locustfile = "fanout_http.py"
    rivals = (ASYNCIO, FLOOR)
    columns = [
        Column("worker CPU ms/req", "cpu_ms", "{:.2f}"),
        Column("upstream conns", "connections"),
        Column("excess conns", "excess"),
    ]
    ratios = [
        Ratio("req/s ratio", "rps"),
        Ratio("x less CPU per request", "cpu_ms", inverse=True),
    ]

    def locust_env(self) -> dict[str, str]:
        """The fan-out's shape."""
        return {"W1_LEGS": str(LEGS), "W1_MS": str(LEG_MS)}

    def measure(
        self, target: Target, users: int, seconds: int, report_dir: Path
    ) -> dict:
        """Locust's figures, the most frequent failure, CPU and connections."""
        requests.post(f"{target.upstream}/stats/reset", timeout=5)
        cpu_before = workers_cpu_seconds(target.master_pid)
        run = self.run(target, users, seconds, report_dir)
        cpu = workers_cpu_seconds(target.master_pid) - cpu_before
        stats = requests.get(f"{target.upstream}/stats", timeout=5).json()
        figures = admitted_headline(read_stats_csv(run.report_dir), ENDPOINT)
        errors = sorted(
            read_failures_csv(run.report_dir), key=lambda r: -int(r["Occurrences"])
        )
        return {
            "top_error": f"{errors[0]['Occurrences']}x {errors[0]['Error']}"
            if errors
            else "",
            **figures,
            "cpu_ms": 1000 * cpu / max(figures["requests"] + figures["shed"], 1),
            "connections": stats["connections"],
            "excess": max(0, stats["connections"] - users * LEGS),
        }

    def details(self, result: dict) -> str:
        """CPU, connections, and the most frequent failure on a line of its own."""
        line = (
            f"CPU {result['cpu_ms']:.2f} ms/req  conns {result['connections']} "
            f"(excess {result['excess']})"
        )
        if result["top_error"]:
            line += f"\n  most frequent failure: {result['top_error']}"
        return line
