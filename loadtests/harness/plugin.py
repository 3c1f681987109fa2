"""The Locust side of the harness; every locustfile imports ``ScenarioUser`` from here.

Importing it adds the harness's command-line options (``options``) and wires
Locust's events to the run's ``Recorder`` on the master (or the only process):
snapshots and the steady-state window, step load (``step_load``), early abort,
guards and the exit code at the end. Workers only run users (``scenario_user``)
and report their open-model late starts to the master.
"""

import locust.runners
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

import loadtests.harness.options  # noqa: F401  (registers the options)
from loadtests.harness.recorder import RECORDER
from loadtests.harness.scenario_user import ScenarioUser

__all__ = ["RECORDER", "ScenarioUser"]

# Workers report every second instead of every 3 s, so windows on the master are sharp.
locust.runners.WORKER_REPORT_INTERVAL = 1.0


def _on_master(environment: Environment) -> bool:
    return not isinstance(environment.runner, WorkerRunner)


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is not None and _on_master(environment):
        # Workers are not told -u; the open model splits the rate over the
        # scenario's users (not the fixed-count helpers such as a baseline).
        helpers = sum(
            cls.fixed_count
            for cls in environment.user_classes
            if not issubclass(cls, ScenarioUser)
        )
        options.harness_users = max(1, (options.num_users or 1) - helpers)
        RECORDER.helpers = helpers


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs) -> None:
    if (
        _on_master(environment)
        and environment.parsed_options is not None
        and RECORDER.environment is None
    ):
        RECORDER.begin(environment)


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_kwargs) -> None:
    if RECORDER.environment is not None and RECORDER.spawned_at is None:
        RECORDER.spawned_at = RECORDER.now()


# The window ends when users start stopping: during --stop-timeout they only
# finish what they started, which would drag the rates down.
@events.test_stopping.add_listener
def _on_test_stopping(environment: Environment, **_kwargs) -> None:
    if _on_master(environment):
        RECORDER.stop()


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kwargs) -> None:
    if _on_master(environment) and RECORDER.environment is not None:
        RECORDER.finish()


@events.report_to_master.add_listener
def _report_late(client_id: str, data: dict) -> None:
    data["harness_late"] = (RECORDER.scheduled, RECORDER.late)
    RECORDER.scheduled = RECORDER.late = 0


@events.worker_report.add_listener
def _collect_late(client_id: str, data: dict) -> None:
    scheduled, late = data.get("harness_late", (0, 0))
    RECORDER.scheduled += scheduled
    RECORDER.late += late
