"""W2 slow SQL: ``/demo/slow-sql/?x=7&ms=50`` (floor 50 ms). Host comes from ``-H``."""

import os

from loadtests.harness.plugin import ScenarioUser

MS = int(os.environ.get("W2_MS", "50"))


class SlowSqlUser(ScenarioUser):
    """The slow-SQL probe; the body must carry the square."""

    def request(self) -> None:
        """One query of MS milliseconds."""
        with self.client.get(
            f"/demo/slow-sql/?x=7&ms={MS}", name="/demo/slow-sql/", catch_response=True
        ) as response:
            if self.shed(response):
                return
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif response.json().get("square") != 49:
                response.failure(f"unexpected body {response.text[:100]!r}")
