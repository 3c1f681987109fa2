"""The steps of a step-load run (``make capacity``), measured as they end.

Each step is measured from the recorder's snapshots with its first
``--step-trim`` seconds (the ramp) cut off, printed, and marks the run for
stopping when its p95 or failure ratio is past the SLO (``--slo-p95-ms``,
``--slo-fail-ratio``). A step's figures are its admitted requests'; the
refusals of the server's admission control (``NAME shed``) count towards the
failure ratio, since a server that refuses work is past its capacity.
"""

from typing import Protocol

from locust.env import Environment

from loadtests.harness.checks import SHED_SUFFIX
from loadtests.harness.window import (
    ADMITTED,
    EndpointStats,
    Snapshot,
    stats_to_json,
    window_stats,
)


class RunClock(Protocol):
    """What a step load needs of the run's recorder (``recorder.Recorder``,
    which owns the step load): the run's clock and its stats snapshots."""

    environment: Environment | None
    snapshots: list[Snapshot]

    def begin(self, environment: Environment) -> None: ...

    def now(self) -> float: ...

    def snapshot(self) -> Snapshot: ...


class StepLoad:
    """The steps so far (users, start, end, stats) and whether to stop adding."""

    def __init__(self, recorder: RunClock) -> None:
        self.recorder = recorder
        self.steps: list[dict] = []
        self.stop_steps = False

    def start(self, users: int, environment: Environment) -> None:
        """A step-load shape moved to ``users``; the previous step ends now."""
        if self.recorder.environment is None:
            # A shape's first tick comes before test_start.
            self.recorder.begin(environment)
        if self.steps:
            self.end()
        self.steps.append({"users": users, "start": self.recorder.now()})

    def close(self) -> None:
        """End the current step, if one is open (the run is stopping)."""
        if self.steps and "end" not in self.steps[-1]:
            self.end()

    def end(self) -> None:
        """Measure the current step (ramp trimmed), print it, stop if past the SLO."""
        recorder = self.recorder
        options = recorder.environment.parsed_options
        step = self.steps[-1]
        recorder.snapshot()
        step["end"] = recorder.now()
        window = window_stats(
            recorder.snapshots, step["start"] + options.step_trim, step["end"]
        )
        stats = window.get(ADMITTED)
        refused = sum(
            s.requests for name, s in window.items() if name.endswith(SHED_SUFFIX)
        )
        step["stats"] = stats_to_json({ADMITTED: stats})[ADMITTED] if stats else None
        if step["stats"]:
            step["stats"]["shed_ratio"] = shed_ratio(stats, refused)
        if stats is None or not stats.requests:
            print(
                f"step {len(self.steps)}: {step['users']} users, no requests",
                flush=True,
            )
            self.stop_steps = True
            return
        shed = step["stats"]["shed_ratio"]
        print(
            f"step {len(self.steps)}: {step['users']:4d} users {stats.rps:8.1f} req/s  "
            f"p50 {stats.p50_ms or 0:5.0f} ms  p95 {stats.p95_ms or 0:5.0f} ms  "
            f"failures {stats.fail_ratio:.2%}  shed {shed:.2%}",
            flush=True,
        )
        if (stats.p95_ms or 0) > options.slo_p95_ms or (
            stats.fail_ratio + shed > options.slo_fail_ratio
        ):
            self.stop_steps = True


def shed_ratio(admitted: EndpointStats, refused: int) -> float:
    """Refused / all requests of a step."""
    total = admitted.requests + refused
    return refused / total if total else 0.0
