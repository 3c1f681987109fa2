"""A same-run baseline: one user timing the stub upstream's own ``/delay?ms=D``.

Add it to a scenario's locustfiles (``-f fanout_http.py,upstream_baseline.py``)
with ``--upstream-url`` pointing at the stub the server fans out to: its stats
row, ``stub /delay baseline``, is what the fan-out is compared with under the
same load on the same machine (a ratio guard in guards.toml). ``UPSTREAM_MS``
(default ``W1_MS``, else 50) sets D. Idle without ``--upstream-url``.
"""

import os

from locust import FastHttpUser, constant, task

MS = int(os.environ.get("UPSTREAM_MS", os.environ.get("W1_MS", "50")))


class UpstreamBaselineUser(FastHttpUser):
    """One user (fixed_count) calling the stub directly ten times a second."""

    fixed_count = 1
    wait_time = constant(0.1)

    @task
    def delay(self) -> None:
        """The stub's /delay by absolute URL."""
        upstream = self.environment.parsed_options.upstream_url
        if not upstream:
            return
        with self.client.get(
            f"{upstream}/delay?ms={MS}",
            name="stub /delay baseline",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
