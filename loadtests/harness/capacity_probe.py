"""The capacity an overload run is offered a multiple of, measured just before it.

``make overload`` offers each scenario with ``arrival_x_capacity = X`` in
guards.toml X times what the same server configuration serves with admission
control off (``SHED_ENABLED=false``), measured in the same command rather than
copied from an earlier ``make capacity``: a short closed-model step load
(``harness/step_shape.py``, 6 more users every 4 s) whose steps are measured
with their first 1.5 s cut off. The capacity is the step with the most
successful answers a second whose p99 is within the SLO and whose failures
are under 1 %; it is what the run's ``min_capacity_ratio`` guard divides
goodput by.

Pure Python but for ``measure``, which runs Locust as its own process.
"""

from dataclasses import dataclass
from pathlib import Path

from devtools.processes import Processes
from loadtests.harness.locust_run import run_locust
from loadtests.harness.paths import STEP_SHAPE

# The server environment the capacity is measured on, over the scenario's own.
ADMISSION_OFF = {"SHED_ENABLED": "false"}
STEP_USERS = 6
STEP_SECONDS = 4.0
STEP_TRIM = 1.5
STEP_COUNT = 10
# Steps stop once p95 passes this: past the knee throughput is flat and only
# latency grows, so further steps would cost time and find nothing.
STOP_P95_MS = 200.0
MAX_FAIL_RATIO = 0.01


@dataclass
class Capacity:
    """The busiest step within the SLO: successful answers a second, users, p99."""

    rps: float
    users: int
    p99_ms: float
    report_dir: Path


def knee(steps: list[dict], slo_ms: float) -> dict | None:
    """The step with the most successful answers a second within the SLO.

    ``steps`` are the step load's (``users`` and ``stats``, its admitted
    requests with ``shed_ratio``); within the SLO: p99 at most ``slo_ms``,
    failures and refusals together at most 1 %.
    """
    within = [
        step
        for step in steps
        if step.get("stats")
        and step["stats"]["requests"]
        and step["stats"]["p99_ms"] is not None
        and step["stats"]["p99_ms"] <= slo_ms
        and step["stats"]["fail_ratio"] + step["stats"].get("shed_ratio", 0.0)
        <= MAX_FAIL_RATIO
    ]
    return max(within, key=lambda s: (s["stats"]["ok_rps"], -s["users"]), default=None)


def measure(
    processes: Processes,
    locustfile: str,
    *,
    host: str,
    slo_ms: float,
    report_dir: Path,
) -> Capacity | None:
    """Step-load ``host`` with ``locustfile`` (closed model); its capacity, or None
    when no step met the SLO."""
    run = run_locust(
        processes,
        [locustfile, STEP_SHAPE],
        host=host,
        users=STEP_USERS,
        seconds=STEP_COUNT * STEP_SECONDS + 2,
        report_dir=report_dir,
        options=[
            "--step-users",
            str(STEP_USERS),
            "--step-seconds",
            str(STEP_SECONDS),
            "--step-trim",
            str(STEP_TRIM),
            "--step-count",
            str(STEP_COUNT),
            "--slo-p95-ms",
            str(STOP_P95_MS),
            "--slo-fail-ratio",
            str(MAX_FAIL_RATIO),
        ],
    )
    best = knee(run.result.get("steps", []), slo_ms)
    if best is None:
        return None
    return Capacity(
        best["stats"]["ok_rps"], best["users"], best["stats"]["p99_ms"], report_dir
    )
