"""Step load for ``make capacity``: add ``--step-users`` users every ``--step-seconds``.

Give it to Locust after a scenario, by path:
``-f loadtests/locustfiles/slow_sql.py,loadtests/harness/step_shape.py``.
It stops after ``--step-count`` steps or, earlier, after the first step whose
p95 exceeds ``--slo-p95-ms`` or whose failure ratio exceeds ``--slo-fail-ratio``
(``step_load`` measures each step with its first ``--step-trim`` seconds cut off).
"""

from locust import LoadTestShape

from loadtests.harness.plugin import RECORDER


class StepLoadShape(LoadTestShape):
    """Users = step_users x step number; each step spawned within a second."""

    def tick(self) -> tuple[int, float] | None:
        """Users and spawn rate now, or None to stop."""
        options = self.runner.environment.parsed_options
        steps = RECORDER.step_load
        step = int(self.get_run_time() // options.step_seconds)
        if step >= options.step_count or steps.stop_steps:
            return None
        users = options.step_users * (step + 1)
        if len(steps.steps) <= step:
            steps.start(users, self.runner.environment)
            if steps.stop_steps:
                # The step that just ended was past the SLO.
                steps.steps.pop()
                return None
        # Fixed-count helpers (W1's baseline timer) come on top of the step's users.
        total = users + RECORDER.helpers
        return total, float(total)
