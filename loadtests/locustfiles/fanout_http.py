"""W1 fan-out HTTP: ``/demo/fan-out/?http=10&ms=50`` (floor 50 ms); host from ``-H``.

The server's ``DEMO_UPSTREAM_URL`` must point at the stub upstream
(``python -m devtools.upstream``); ``W1_LEGS`` and ``W1_MS`` change the shape.
``make loadtest`` runs it with ``upstream_baseline.py``, which times the stub
directly in the same run, for the ratio guard.
"""

import os

from loadtests.harness.checks import check_fan_out
from loadtests.harness.plugin import ScenarioUser

LEGS = int(os.environ.get("W1_LEGS", "10"))
MS = int(os.environ.get("W1_MS", "50"))


class FanOutHttpUser(ScenarioUser):
    """Fan-out to the stub; every leg must be ok."""

    def request(self) -> None:
        """LEGS upstream calls of MS milliseconds."""
        with self.client.get(
            f"/demo/fan-out/?http={LEGS}&ms={MS}",
            name="/demo/fan-out/ W1",
            catch_response=True,
        ) as response:
            if not self.shed(response):
                check_fan_out(response, LEGS)
