"""W2 slow SQL: ``/demo/slow-sql/?x=7&ms=50`` (floor 50 ms). Host comes from ``-H``."""

import os

from locust import FastHttpUser, constant, task

MS = int(os.environ.get("W2_MS", "50"))


class SlowSqlUser(FastHttpUser):
    """Calls the slow-SQL probe back to back (closed model, no think time)."""

    wait_time = constant(0)

    @task
    def slow_sql(self) -> None:
        """One query of MS milliseconds; the body must carry the square."""
        with self.client.get(
            f"/demo/slow-sql/?x=7&ms={MS}", name="/demo/slow-sql/", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif response.json().get("square") != 49:
                response.failure(f"unexpected body {response.text[:100]!r}")
