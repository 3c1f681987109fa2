"""W1 fan-out HTTP: ``/demo/fan-out/?http=10&ms=50`` (floor 50 ms); host from ``-H``.

The server's ``DEMO_UPSTREAM_URL`` must point at the stub upstream
(``python -m loadtests.upstream``); ``W1_LEGS`` and ``W1_MS`` change the shape.
With ``--upstream-url`` (the same stub), one extra user times the stub directly
(``stub /delay baseline``), so a guard can compare the fan-out with the
upstream's own latency measured in the same run on the same machine.
"""

import os

from locust import FastHttpUser, constant, task

from loadtests.common.checks import check_fan_out
from loadtests.common.plugin import ScenarioUser

LEGS = int(os.environ.get("W1_LEGS", "10"))
MS = int(os.environ.get("W1_MS", "50"))
BASELINE = "stub /delay baseline"


class FanOutHttpUser(ScenarioUser):
    """Fan-out to the stub; every leg must be ok."""

    def request(self) -> None:
        """LEGS upstream calls of MS milliseconds."""
        with self.client.get(
            f"/demo/fan-out/?http={LEGS}&ms={MS}",
            name="/demo/fan-out/ W1",
            catch_response=True,
        ) as response:
            check_fan_out(response, LEGS)


class UpstreamBaselineUser(FastHttpUser):
    """One user timing the stub's own ``/delay?ms=MS`` ten times a second."""

    fixed_count = 1
    wait_time = constant(0.1)

    @task
    def delay(self) -> None:
        """The stub directly (absolute URL); idle without --upstream-url."""
        upstream = self.environment.parsed_options.upstream_url
        if not upstream:
            return
        with self.client.get(
            f"{upstream}/delay?ms={MS}", name=BASELINE, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
