"""W3 mixed: ``/demo/fan-out/?http=5&sql=5&ms=50`` (floor 50 ms); host from ``-H``.

Five HTTP legs to the server's ``DEMO_UPSTREAM_URL`` (the stub upstream) and five
``pg_sleep`` queries at once; ``W3_MS`` changes the delay.
"""

import os

from loadtests.harness.checks import check_fan_out
from loadtests.harness.plugin import ScenarioUser

HTTP_LEGS = SQL_LEGS = 5
MS = int(os.environ.get("W3_MS", "50"))


class MixedUser(ScenarioUser):
    """Fan-out with HTTP and SQL legs; every leg must be ok."""

    def request(self) -> None:
        """5 HTTP + 5 SQL legs of MS milliseconds."""
        with self.client.get(
            f"/demo/fan-out/?http={HTTP_LEGS}&sql={SQL_LEGS}&ms={MS}",
            name="/demo/fan-out/ W3",
            catch_response=True,
        ) as response:
            if not self.shed(response):
                check_fan_out(response, HTTP_LEGS + SQL_LEGS)
