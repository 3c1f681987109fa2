"""W1 fan-out HTTP: ``/demo/fan-out/?http=10&ms=50`` (floor 50 ms); host from ``-H``.

The server's ``DEMO_UPSTREAM_URL`` must point at the stub upstream
(``python -m loadtests.upstream``); ``W1_LEGS`` and ``W1_MS`` change the shape.
"""

import os

from locust import FastHttpUser, constant, task

LEGS = int(os.environ.get("W1_LEGS", "10"))
MS = int(os.environ.get("W1_MS", "50"))


class FanOutHttpUser(FastHttpUser):
    """Calls the fan-out probe back to back (closed model, no think time)."""

    wait_time = constant(0)

    @task
    def fan_out(self) -> None:
        """LEGS upstream calls of MS milliseconds; every leg must be ok."""
        with self.client.get(
            f"/demo/fan-out/?http={LEGS}&ms={MS}",
            name="/demo/fan-out/ W1",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            body = response.json()
            if body.get("ok") != LEGS:
                failed = [leg for leg in body.get("legs", []) if leg["status"] != "ok"]
                response.failure(f"{len(failed)} legs failed: {failed[:1]!r}")
