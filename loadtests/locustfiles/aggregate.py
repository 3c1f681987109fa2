"""Aggregation API: ``/api/aggregate/bench/`` (5 HTTP + 1 SQL source, 50 ms each).

The server runs ``loadtests/aggregations_bench.toml``; host from ``-H``, token
from ``AGG_BENCH_TOKEN``. Besides the request itself, each answer's slowest
source (its ``latency_ms`` inside the worker) is reported as a second stats
row, "slowest source", so one run gives both distributions.
"""

import os
import random

from loadtests.harness.plugin import ScenarioUser

TOKEN = os.environ.get("AGG_BENCH_TOKEN", "bench-token-0123456789")
MS = int(os.environ.get("AGG_BENCH_MS", "50"))


class AggregateUser(ScenarioUser):
    """The bench aggregation; every source must be ok."""

    def request(self) -> None:
        """Six sources of MS ms, with a fresh id so nothing is shared or cached."""
        with self.client.get(
            f"/api/aggregate/bench/?id={random.randrange(10**9)}&ms={MS}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            name="/api/aggregate/bench/",
            catch_response=True,
        ) as response:
            if self.shed(response):
                return
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            sources = response.json()["sources"]
            bad = {name: s for name, s in sources.items() if s["status"] != "ok"}
            if bad:
                response.failure(f"{len(bad)} sources failed: {list(bad.items())[:1]}")
                return
            self.environment.events.request.fire(
                request_type="SOURCE",
                name="slowest source",
                response_time=max(s["latency_ms"] for s in sources.values()),
                response_length=0,
                exception=None,
                context={},
            )
