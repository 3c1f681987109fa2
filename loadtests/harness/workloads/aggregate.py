"""AGG, the aggregation API: 5 HTTP sources on the stub and 1 SQL source, 50 ms each.

The server runs ``loadtests/aggregations_bench.toml``. A run records, besides
Locust's figures, the failures by kind and the slowest source's p50 as measured
inside the worker in the same answers; the overhead is p50 over the 50 ms floor
(the slowest source's nominal latency; goal <= 1.15 at 10 users) and over the
measured slowest source.
"""

from pathlib import Path

from loadtests.harness.locust_run import (
    admitted_headline,
    read_failures_csv,
    read_stats_csv,
)
from loadtests.harness.paths import AGGREGATIONS_BENCH
from loadtests.harness.workloads.base import Column, Target, Workload

FLOOR_MS = 50
TOKEN = "bench-token-0123456789"
ENDPOINT = "/api/aggregate/bench/"


class Aggregate(Workload):
    """The bench aggregation on this tree, against gthread or other revisions."""

    name = "AGG"
    title = f"{ENDPOINT} (5 HTTP + 1 SQL, {FLOOR_MS} ms each)"
    locustfile = "aggregate.py"
    columns = [
        Column("slowest source p50 ms", "source_p50"),
        Column(f"p50 / {FLOOR_MS} ms", "over_floor", "{:.2f}x"),
        Column("p50 / slowest source", "over_source", "{:.2f}x"),
    ]

    def server_env(self, upstream: str) -> dict[str, str]:
        """The bench registry, its token and a pool of 32."""
        return {
            "DB_POOL_SIZE": "32",
            "AGGREGATIONS_FILE": str(AGGREGATIONS_BENCH),
            "AGGREGATION_API_TOKENS": TOKEN,
            "DEMO_UPSTREAM_URL": upstream,
        }

    def locust_env(self) -> dict[str, str]:
        """The token the locustfile sends."""
        return {"AGG_BENCH_TOKEN": TOKEN}

    def measure(
        self, target: Target, users: int, seconds: int, report_dir: Path
    ) -> dict:
        """Locust's figures, failures by kind, the slowest source and the overhead."""
        run = self.run(target, users, seconds, report_dir)
        rows = read_stats_csv(run.report_dir)
        figures = admitted_headline(rows, ENDPOINT)
        source = rows.get("slowest source")  # none when every request was refused
        source_p50 = float(source["50%"]) if source else 0.0
        kinds = {
            row["Error"].removeprefix("CatchResponseError(").strip("')"): int(
                row["Occurrences"]
            )
            for row in read_failures_csv(run.report_dir)
        }
        return {
            "kinds": kinds,
            **figures,
            "source_p50": source_p50,
            "over_floor": figures["p50"] / FLOOR_MS,
            "over_source": figures["p50"] / source_p50,
        }

    def details(self, result: dict) -> str:
        """Failures by kind and the slowest source."""
        kinds = f"{result['kinds']}  " if result["kinds"] else ""
        return f"{kinds}slowest source p50 {result['source_p50']:5.0f} ms"
