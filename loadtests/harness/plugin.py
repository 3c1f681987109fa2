"""The Locust side of the harness; every locustfile imports ``ScenarioUser`` from here.

Importing it adds the harness's command-line options (``options``) and wires
Locust's events to the run's ``Recorder`` on the master (or the only process):
snapshots and the steady-state window, step load (``step_load``), early abort,
guards and the exit code at the end. Workers only run users (``scenario_user``)
and report their open-model late starts and goodput to the master.

Goodput: every answer that succeeded within ``--slo-ms`` is also counted under
``NAME within SLO`` (requests only, no latencies), so a guard can ask for so
many good answers a second however many others were late or refused.
"""

import locust.runners
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

import loadtests.harness.options  # noqa: F401  (registers the options)
from loadtests.harness.checks import GOODPUT_SUFFIX, SHED_SUFFIX
from loadtests.harness.recorder import RECORDER
from loadtests.harness.scenario_user import ScenarioUser

__all__ = ["RECORDER", "ScenarioUser"]

# Workers report every second instead of every 3 s, so windows on the master are sharp.
locust.runners.WORKER_REPORT_INTERVAL = 1.0


def _on_master(environment: Environment) -> bool:
    return not isinstance(environment.runner, WorkerRunner)


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs) -> None:
    RECORDER.options_of = environment
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


@events.request.add_listener
def _count_goodput(
    name: str, response_time: float, exception: BaseException | None, **_kwargs
) -> None:
    options = RECORDER.options_of.parsed_options if RECORDER.options_of else None
    if (
        exception is None
        and options is not None
        and not name.endswith(SHED_SUFFIX)
        and response_time <= options.slo_ms
    ):
        key = name + GOODPUT_SUFFIX
        RECORDER.good[key] = RECORDER.good.get(key, 0) + 1


@events.report_to_master.add_listener
def _report_late(client_id: str, data: dict) -> None:
    data["harness_late"] = (RECORDER.scheduled, RECORDER.late)
    data["harness_good"] = RECORDER.good
    RECORDER.scheduled = RECORDER.late = 0
    RECORDER.good = {}


@events.worker_report.add_listener
def _collect_late(client_id: str, data: dict) -> None:
    scheduled, late = data.get("harness_late", (0, 0))
    RECORDER.scheduled += scheduled
    RECORDER.late += late
    for key, count in data.get("harness_good", {}).items():
        RECORDER.good[key] = RECORDER.good.get(key, 0) + count
