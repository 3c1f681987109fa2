"""One run's record on the master (or the only process): snapshots and guards.

The recorder snapshots Locust's cumulative stats once a second (``window``) so
figures cover the steady state only, from ``--warmup`` seconds after all users
are spawned to the moment users start stopping; aborts the run early when a
guard is hopeless (``abort_factor`` in guards.toml); and when Locust quits
evaluates the scenario's guards, prints them, sets the exit code
(``guards.GUARD_FAILED`` on failure) and writes everything to ``--steady-json``.
"""

import json
import time
from pathlib import Path

import gevent
from locust.env import Environment
from locust.stats import RequestStats

from loadtests.harness import guards
from loadtests.harness.checks import SHED_SUFFIX
from loadtests.harness.step_load import StepLoad
from loadtests.harness.window import (
    ADMITTED,
    AGGREGATED,
    Counts,
    EndpointStats,
    Snapshot,
    stats_to_json,
    window_stats,
    without,
)

SNAPSHOT_INTERVAL_S = 1.0


def cumulative_counts(stats: RequestStats) -> dict[str, Counts]:
    """Counts of every endpoint, of all of them (``Aggregated``) and of all but
    the refusals (``Admitted``) so far."""
    entries = {
        name: Counts(e.num_requests, e.num_failures, dict(e.response_times))
        for (name, _method), e in stats.entries.items()
    }
    total = stats.total
    entries[AGGREGATED] = Counts(
        total.num_requests, total.num_failures, dict(total.response_times)
    )
    refused = [c for name, c in entries.items() if name.endswith(SHED_SUFFIX)]
    entries[ADMITTED] = without(entries[AGGREGATED], refused)
    return entries


class Recorder:
    """Snapshots, steady-state window, steps, late starts and guards of one run."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.snapshots: list[Snapshot] = []
        self.t0 = 0.0
        self.spawned_at: float | None = None
        self.stopped_at: float | None = None
        self.aborted = ""
        # Open-model starts, and those that came late (workers report theirs).
        self.scheduled = 0
        self.late = 0
        self.step_load = StepLoad(self)
        self.config: dict = {}
        self.greenlet: gevent.Greenlet | None = None
        self.workers = 0
        # Fixed-count users that are not the scenario's (a baseline timer).
        self.helpers = 0
        # Answers within the SLO per endpoint, cumulative ("NAME within SLO").
        self.good: dict[str, int] = {}
        # The process's Locust environment, for its options (workers' too).
        self.options_of: Environment | None = None

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
        # Workers have left by the time the results are written: count them now.
        self.workers = max(self.workers, getattr(runner, "worker_count", 0))
        entries = cumulative_counts(runner.stats)
        entries.update({key: Counts(n, 0, {}) for key, n in self.good.items()})
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
        if options.capacity_rps:
            spec["capacity_rps"] = options.capacity_rps
        return guards.evaluate(
            options.scenario, spec, self.steady(), settings=self.config["settings"]
        )

    def _loop(self) -> None:
        while self.stopped_at is None:
            gevent.sleep(SNAPSHOT_INTERVAL_S)
            if self.stopped_at is not None:
                break
            self.snapshot()
            if self.spawned_at is not None and not self.aborted:
                self._abort_if_hopeless()

    def _abort_if_hopeless(self) -> None:
        scenario = self.environment.parsed_options.scenario
        if self.config["scenarios"].get(scenario, {}).get("abort") is False:
            # A measurement (make overload): its figures matter even when its
            # guards are far off, so it runs to the end.
            return
        settings = self.config["settings"]
        steady_for = self.now() - self.spawned_at - self.warmup()
        if steady_for < settings["abort_after_s"]:
            return
        total = self.steady().get(AGGREGATED)
        if (total.requests if total else 0) < settings["abort_min_requests"]:
            return
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
            self.step_load.close()

    def finish(self) -> None:
        """Evaluate guards, print them, set the exit code, write --steady-json."""
        options = self.environment.parsed_options
        self.stop()
        checks = self.checks()
        if options.scenario:
            self._report(checks)
        if options.arrival_rate:
            print(f"open model: {self.scheduled} scheduled, {self.late} late starts")
        if options.steady_json:
            path = Path(options.steady_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.result(checks), indent=1))

    def _report(self, checks: list[guards.Check]) -> None:
        """Print the guard table and set Locust's exit code from it."""
        print(
            f"{self.environment.parsed_options.scenario}: guards evaluated on the "
            f"master ({self.workers} workers) over the steady state",
            flush=True,
        )
        print(guards.format_table(checks), flush=True)
        code = guards.exit_code(checks)
        if self.aborted:
            print(f"aborted early: {self.aborted}", flush=True)
            code = guards.GUARD_FAILED
        self.environment.process_exit_code = code

    def result(self, checks: list[guards.Check]) -> dict:
        """What ``--steady-json`` holds: window, stats, checks, steps, late starts."""
        options = self.environment.parsed_options
        window = (
            [self.spawned_at + self.warmup(), self.stopped_at]
            if self.spawned_at is not None
            else None
        )
        return {
            "scenario": options.scenario,
            # monotonic origin of window and steps: the scraper's clock too.
            "clock": self.t0,
            "window": window,
            "stats": stats_to_json(self.steady()),
            "checks": [vars(c) for c in checks],
            "aborted": self.aborted,
            "exit_code": self.environment.process_exit_code,
            "arrival_rate": options.arrival_rate,
            "capacity_rps": options.capacity_rps,
            "retry_policy": options.retry_policy,
            "scheduled": self.scheduled,
            "late_starts": self.late,
            "steps": self.step_load.steps,
            "workers": self.workers,
        }


RECORDER = Recorder()
