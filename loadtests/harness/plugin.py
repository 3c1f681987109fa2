"""The Locust side of the harness; every locustfile imports ``ScenarioUser`` from here.

Importing it adds command-line options (all optional, so a locustfile still runs
as plain Locust) and event listeners that, on the master (or the only process):

* snapshot the stats once a second (``harness.window``) so figures cover the
  steady state only: from ``--warmup`` seconds after all users are spawned to the
  end, or each step of a step-load run with its ramp (``--step-trim``) cut off;
* evaluate the scenario's guards (``--guards``, ``--scenario``) when Locust quits,
  print the table, set the exit code (``guards.GUARD_FAILED`` on failure) and
  write everything to ``--steady-json``;
* abort the run early when a guard is hopeless (``abort_factor`` in guards.toml);
* in the open model (``--arrival-rate R``) start requests on a fixed schedule
  whatever the responses do, and count the starts that came late.

Workers only run users and report their late starts to the master.
"""

import json
import time
from pathlib import Path

import gevent
import gevent.pool
import locust.runners
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

from loadtests.harness import guards
from loadtests.harness.window import (
    AGGREGATED,
    Counts,
    EndpointStats,
    Snapshot,
    stats_to_json,
    window_stats,
)

# Workers report every second instead of every 3 s, so windows on the master are sharp.
locust.runners.WORKER_REPORT_INTERVAL = 1.0

SNAPSHOT_INTERVAL_S = 1.0
# An open-model request that starts this much after its slot is counted as late.
LATE_AFTER_S = 0.010
# Most requests one open-model user keeps in flight (and HTTP connections it opens).
MAX_IN_FLIGHT = 200


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument("--scenario", default="", help="guards.toml scenario to check")
    parser.add_argument("--guards", default=str(guards.GUARDS_FILE), help="guards file")
    parser.add_argument(
        "--steady-json", default="", help="write steady-state results here"
    )
    parser.add_argument(
        "--warmup", type=float, default=-1.0, help="seconds trimmed after spawning"
    )
    parser.add_argument(
        "--arrival-rate", type=float, default=0.0, help="open model: total req/s"
    )
    parser.add_argument(
        "--upstream-url", default="", help="stub upstream, timed directly as a baseline"
    )
    parser.add_argument(
        "--step-users", type=int, default=0, help="users added per step"
    )
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument(
        "--step-trim", type=float, default=5.0, help="ramp cut per step"
    )
    parser.add_argument("--step-count", type=int, default=10, help="most steps")
    parser.add_argument(
        "--slo-p95-ms", type=float, default=200.0, help="stop steps above"
    )
    parser.add_argument(
        "--slo-fail-ratio", type=float, default=0.01, help="...or above"
    )


class Recorder:
    """Snapshots, steady-state window, steps, late starts and guards of one run."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.snapshots: list[Snapshot] = []
        self.t0 = 0.0
        self.spawned_at: float | None = None
        self.stopped_at: float | None = None
        self.aborted = ""
        self.scheduled = 0
        self.late = 0
        self.steps: list[dict] = []
        self.stop_steps = False
        self.config: dict = {}
        self.greenlet: gevent.Greenlet | None = None
        self.workers = 0
        # Fixed-count users that are not the scenario's (a baseline timer).
        self.helpers = 0

    # --- life cycle (master or local runner only) ---

    def begin(self, environment: Environment) -> None:
        """Start snapshotting."""
        self.environment = environment
        options = environment.parsed_options
        self.config = guards.load(Path(options.guards))
        self.t0 = time.monotonic()
        self.snapshot()
        self.greenlet = gevent.spawn(self._loop)

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def snapshot(self) -> Snapshot:
        """Record the runner's cumulative stats now."""
        runner = self.environment.runner
        entries = {
            name: Counts(e.num_requests, e.num_failures, dict(e.response_times))
            for (name, _method), e in runner.stats.entries.items()
        }
        total = runner.stats.total
        entries[AGGREGATED] = Counts(
            total.num_requests, total.num_failures, dict(total.response_times)
        )
        # Workers have left by the time the results are written: count them now.
        self.workers = max(self.workers, getattr(runner, "worker_count", 0))
        snap = Snapshot(self.now(), runner.user_count, entries)
        self.snapshots.append(snap)
        return snap

    def warmup(self) -> float:
        """Seconds trimmed after spawning (option, else guards.toml)."""
        warmup = self.environment.parsed_options.warmup
        return warmup if warmup >= 0 else float(self.config["settings"]["warmup_s"])

    def steady(self) -> dict[str, EndpointStats]:
        """Stats from spawning + warm-up until now (or the stop)."""
        if self.spawned_at is None:
            return {}
        end = self.stopped_at if self.stopped_at is not None else self.now()
        return window_stats(self.snapshots, self.spawned_at + self.warmup(), end)

    def checks(self) -> list[guards.Check]:
        """The scenario's guards on the steady state so far (none without one)."""
        options = self.environment.parsed_options
        if not options.scenario:
            return []
        spec = dict(self.config["scenarios"].get(options.scenario, {}))
        if options.arrival_rate:
            spec["arrival_rate"] = options.arrival_rate
        return guards.evaluate(
            options.scenario, spec, self.steady(), settings=self.config["settings"]
        )

    def _loop(self) -> None:
        settings = self.config["settings"]
        while self.stopped_at is None:
            gevent.sleep(SNAPSHOT_INTERVAL_S)
            if self.stopped_at is not None:
                break
            self.snapshot()
            if self.spawned_at is None or self.aborted:
                continue
            steady_for = self.now() - self.spawned_at - self.warmup()
            if steady_for < settings["abort_after_s"]:
                continue
            stats = self.steady()
            if (
                stats.get(AGGREGATED, EndpointStats(0, 0, 0, None, None, None)).requests
                < (settings["abort_min_requests"])
            ):
                continue
            lost = guards.hopeless(self.checks(), settings["abort_factor"])
            if lost:
                self.aborted = "; ".join(
                    f"{c.endpoint} {c.guard} = {guards.fmt(c.value)}" for c in lost
                )
                print(f"aborting early, guard hopeless: {self.aborted}", flush=True)
                self.environment.runner.quit()

    def stop(self) -> None:
        """Last snapshot; close the current step."""
        if self.stopped_at is None and self.environment is not None:
            self.snapshot()
            self.stopped_at = self.now()
            if self.steps and "end" not in self.steps[-1]:
                self.end_step()

    # --- step load ---

    def start_step(self, users: int, environment: Environment) -> None:
        """A step-load shape moved to ``users``; the previous step ends now."""
        if self.environment is None:
            # A shape's first tick comes before test_start.
            self.begin(environment)
        if self.steps:
            self.end_step()
        self.steps.append({"users": users, "start": self.now()})

    def end_step(self) -> None:
        """Measure the current step (ramp trimmed), print it, stop if past the SLO."""
        options = self.environment.parsed_options
        step = self.steps[-1]
        self.snapshot()
        step["end"] = self.now()
        stats = window_stats(
            self.snapshots, step["start"] + options.step_trim, step["end"]
        ).get(AGGREGATED)
        step["stats"] = (
            stats_to_json({AGGREGATED: stats})[AGGREGATED] if stats else None
        )
        if stats is None or not stats.requests:
            print(
                f"step {len(self.steps)}: {step['users']} users, no requests",
                flush=True,
            )
            self.stop_steps = True
            return
        print(
            f"step {len(self.steps)}: {step['users']:4d} users {stats.rps:8.1f} req/s  "
            f"p50 {stats.p50_ms:5.0f} ms  p95 {stats.p95_ms:5.0f} ms  "
            f"failures {stats.fail_ratio:.2%}",
            flush=True,
        )
        if (
            stats.p95_ms > options.slo_p95_ms
            or stats.fail_ratio > options.slo_fail_ratio
        ):
            self.stop_steps = True

    # --- results ---

    def finish(self) -> None:
        """Evaluate guards, print them, set the exit code, write --steady-json."""
        options = self.environment.parsed_options
        self.stop()
        checks = self.checks()
        if options.scenario:
            print(
                f"{options.scenario}: guards evaluated on the master "
                f"({self.workers} workers) over the steady state",
                flush=True,
            )
            print(guards.format_table(checks), flush=True)
            if self.aborted:
                print(f"aborted early: {self.aborted}", flush=True)
            code = guards.exit_code(checks)
            if self.aborted:
                code = guards.GUARD_FAILED
            self.environment.process_exit_code = code
        if options.arrival_rate:
            print(f"open model: {self.scheduled} scheduled, {self.late} late starts")
        if options.steady_json:
            window = (
                [self.spawned_at + self.warmup(), self.stopped_at]
                if self.spawned_at is not None
                else None
            )
            result = {
                "scenario": options.scenario,
                "window": window,
                "stats": stats_to_json(self.steady()),
                "checks": [vars(c) for c in checks],
                "aborted": self.aborted,
                "exit_code": self.environment.process_exit_code,
                "arrival_rate": options.arrival_rate,
                "scheduled": self.scheduled,
                "late_starts": self.late,
                "steps": self.steps,
                "workers": self.workers,
            }
            path = Path(options.steady_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))


RECORDER = Recorder()


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


class ScenarioUser(FastHttpUser):
    """A scenario's user: ``request()`` back to back, or on a schedule (open model).

    Closed model (default): each user calls ``request()`` again as soon as the
    previous answer arrives. Open model (``--arrival-rate R``): each of the ``-u``
    users starts ``R / users`` requests a second on a fixed schedule, each in its
    own greenlet, so a slow server does not slow the arrivals (no coordinated
    omission); a start more than 10 ms late (in-flight limit reached or the
    load generator saturated) is counted as late.
    """

    abstract = True
    wait_time = constant(0)
    concurrency = MAX_IN_FLIGHT

    def request(self) -> None:
        """One request of the scenario, response checked; subclasses define it."""
        raise NotImplementedError

    @task
    def drive(self) -> None:
        """Closed model: one request. Open model: the schedule, until stopped."""
        options = self.environment.parsed_options
        rate = options.arrival_rate if options else 0
        if not rate:
            self.request()
            return
        users = getattr(options, "harness_users", None) or options.num_users or 1
        self._open_loop(rate / users)

    def _open_loop(self, rate: float) -> None:
        pool = gevent.pool.Pool(MAX_IN_FLIGHT)
        interval = 1.0 / rate
        due = time.monotonic()
        # Stop scheduling as soon as the run ends (the in-flight ones may finish).
        while self._state != LOCUST_STATE_STOPPING:
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            pool.wait_available()
            RECORDER.scheduled += 1
            if time.monotonic() - due > LATE_AFTER_S:
                RECORDER.late += 1
            pool.spawn(self.request)
            due += interval
        pool.join()
