"""Run Locust headless as its own process and read what it wrote.

Every run writes into its report directory: Locust's CSV (``locust_stats.csv``,
``locust_failures.csv``, ...), its HTML report (``report.html``), its log
(``locust.log``) and the plugin's steady-state results (``steady.json``).
"""

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict, Unpack

from devtools.ports import free_port
from devtools.processes import Processes
from loadtests.harness.checks import SHED_SUFFIX
from loadtests.harness.paths import LOCUST_CONF, LOCUSTFILES


@dataclass
class LocustRun:
    """A finished run: Locust's exit code, where its files are, the plugin's results."""

    returncode: int
    report_dir: Path
    result: dict = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, dict]:
        """Steady-state stats per endpoint (``Aggregated`` included)."""
        return self.result.get("stats", {})


class LocustCommand(TypedDict):
    """``locust_args``'s keywords, passed on by ``run_locust``."""

    host: str
    users: int
    seconds: float
    report_dir: Path
    options: NotRequired[list[str] | None]


def locust_args(
    locustfiles: list[str | Path],
    *,
    host: str,
    users: int,
    seconds: float,
    report_dir: Path,
    options: list[str] | None = None,
) -> list[str]:
    """The command line of a headless run (without --master/--worker/--processes).

    ``locustfiles`` are names in ``loadtests/locustfiles/``, or paths.
    """
    files = ",".join(str(LOCUSTFILES / name) for name in locustfiles)
    return [
        sys.executable,
        "-m",
        "locust",
        "--config",
        str(LOCUST_CONF),
        "-f",
        files,
        "-H",
        host,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds:g}s",
        "--csv",
        str(report_dir / "locust"),
        "--html",
        str(report_dir / "report.html"),
        "--steady-json",
        str(report_dir / "steady.json"),
        *(options or []),
    ]


def run_locust(
    processes: Processes,
    locustfiles: list[str | Path],
    *,
    local_processes: int = 0,
    workers: int = 0,
    echo: bool = False,
    env: dict[str, str] | None = None,
    **command: Unpack[LocustCommand],
) -> LocustRun:
    """One headless run of ``locust_args(locustfiles, **command)``; its results.

    ``local_processes``: ``--processes N``. ``workers`` > 0: a master and that
    many ``--worker`` processes on loopback, as on several machines. ``echo``
    passes Locust's stdout (the plugin's lines and tables) to ours; its log goes
    to ``locust.log``. ``env`` adds to Locust's (settings a locustfile reads).
    """
    report_dir: Path = command["report_dir"]
    report_dir.mkdir(parents=True, exist_ok=True)
    args = locust_args(locustfiles, **command)
    if local_processes:
        args += ["--processes", str(local_processes)]
    port = free_port() if workers else 0
    if workers:
        args += master_options(port, workers)
    log = (report_dir / "locust.log").open("a")
    environment = {**os.environ, **(env or {})}
    started: list[subprocess.Popen] = []
    try:
        started.append(
            processes.popen(
                args,
                "locust",
                stdout=None if echo else log,
                stderr=log,
                env=environment,
            )
        )
        started += [
            processes.popen(
                worker_args(args, port),
                f"worker-{number}",
                stdout=log,
                stderr=log,
                env=environment,
            )
            for number in range(workers)
        ]
        try:
            returncode = started[0].wait(timeout=command["seconds"] + 120)
        except subprocess.TimeoutExpired:
            returncode = -1
    finally:
        log.close()
        # Workers leave when the master quits; stop what is left, and only ours.
        for process in reversed(started):
            processes.stop(process)
    steady = report_dir / "steady.json"
    result = json.loads(steady.read_text()) if steady.exists() else {}
    return LocustRun(returncode, report_dir, result)


def master_options(port: int, workers: int) -> list[str]:
    """What makes a run the master of ``workers`` processes on loopback ``port``."""
    return [
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "30",
    ]


def worker_args(args: list[str], port: int) -> list[str]:
    """A worker's command line: the master's locustfiles, its loopback ``port``."""
    return [
        *args[:7],  # python -m locust --config C -f FILES
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]


def read_stats_csv(report_dir: Path) -> dict[str, dict[str, str]]:
    """Locust's whole-run ``locust_stats.csv`` rows by name."""
    with open(report_dir / "locust_stats.csv") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def read_failures_csv(report_dir: Path) -> list[dict[str, str]]:
    """Locust's ``locust_failures.csv`` rows (Method, Name, Error, Occurrences)."""
    with open(report_dir / "locust_failures.csv") as handle:
        return list(csv.DictReader(handle))


def headline(row: dict[str, str]) -> dict[str, float]:
    """req/s, p50, p99 (ms), requests and failures from a row of Locust's CSV."""
    return {
        "requests": int(row["Request Count"]),
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "failures": int(row["Failure Count"]),
    }


def admitted_headline(rows: dict[str, dict[str, str]], endpoint: str) -> dict:
    """``headline`` of ``endpoint``'s admitted requests, with its refusals counted.

    Refusals (``NAME shed``, the server's admission control) are neither
    throughput nor failures: they are reported apart as ``shed``.
    """
    row = rows.get(endpoint)
    figures = (
        headline(row)
        if row
        else {"requests": 0, "rps": 0.0, "p50": 0.0, "p99": 0.0, "failures": 0}
    )
    shed = rows.get(endpoint + SHED_SUFFIX)
    figures["shed"] = int(shed["Request Count"]) if shed else 0
    return figures
