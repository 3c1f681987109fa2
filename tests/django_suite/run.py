"""Django's own database-backend tests on the stock backend and on ours, compared.

Runs Django's ``tests/runtests.py`` (from the source release of the Django
version pinned in requirements/base.txt) four times on a throwaway embedded
PostgreSQL: stock ``django.db.backends.postgresql`` and our
``project.core.pg_pool``, each plain and under gevent patching. Every test's
outcome is recorded (``recorder.py``); when a test's outcome on our backend
differs from stock in the same mode, its app is run again on both, and a
difference that persists fails the command (exit 1), as does a run that
crashes or runs no tests. Differences that go away on the second run are
reported as flaky. Logs and results: ``.cache/django-suite/logs/``.

Usage: ``python -m tests.django_suite.run [--apps a,b] [--jobs 2] [--timeout S]``
from the project root (``make test-django-suite``).
"""

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

from project import embedded_pg

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "django-suite"
SETTINGS = "tests.django_suite.suite_settings"
APPS = (
    "backends transactions transaction_hooks select_for_update queries basic"
    " model_fields db_functions expressions aggregation custom_lookups delete"
    " update get_or_create bulk_create raw_query introspection schema migrations"
    " postgres_tests"
).split()
BACKENDS = ("stock", "ours")
MODES = ("plain", "gevent")
# Extensions the suite's migrations create that the embedded build lacks. Empty
# stand-ins let those migrations apply; the few tests calling their functions
# (db_functions' SHA tests) then fail alike on both backends.
STUB_EXTENSIONS = ("pgcrypto", "uuid-ossp")
# Without ICU the collation Django's PostgreSQL tests use does not exist, and
# model_fields' models need it to be created at all: a stand-in copy of "C".
STUB_COLLATION = "sv-x-icu"
# More differences than this are a broken backend, not flakes: no re-run.
RERUN_LIMIT = 200
TABLE_LIMIT = 100  # rows printed; differences.txt has them all
ABSENT = "absent"


@dataclass
class Run:
    """One runtests.py invocation and what came of it."""

    backend: str
    mode: str
    label: str
    log: Path
    seconds: float = 0.0
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    crash: str = ""

    def outcome(self, test_id: str) -> str:
        """The test's outcome, or ``absent`` when it did not run."""
        return self.outcomes.get(test_id, {}).get("outcome", ABSENT)

    def summary(self) -> str:
        """A one-line account: test count, outcomes and wall time."""
        counts = Counter(entry["outcome"] for entry in self.outcomes.values())
        tally = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        status = f"CRASHED: {self.crash}" if self.crash else tally
        return (
            f"{self.backend:5} {self.mode:6} {len(self.outcomes):5} tests"
            f"  {self.seconds:6.1f} s  {status}"
        )


def pinned_django_version(
    requirements: Path = ROOT / "requirements" / "base.txt",
) -> str:
    """The exact Django version pinned in requirements/base.txt."""
    for line in requirements.read_text().splitlines():
        match = re.fullmatch(r"django==([\w.]+)", line.strip(), re.IGNORECASE)
        if match:
            return match.group(1)
    raise SystemExit(f"no Django==VERSION pin in {requirements}")


def django_tests_dir(version: str, cache: Path = CACHE) -> Path:
    """Django's ``tests/`` folder from its source release, downloaded once."""
    installed = importlib.metadata.version("django")
    if installed != version:
        raise SystemExit(
            f"Django {installed} is installed but {version} is pinned: make install"
        )
    source = cache / f"django-{version}"
    if (source / "tests" / "runtests.py").is_file():
        return source / "tests"
    dist = cache / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        + ["--no-binary", ":all:", f"django=={version}", "-d", str(dist)],
        check=True,
    )
    (sdist,) = (
        path
        for path in dist.glob("*.tar.gz")
        if path.name.lower() == f"django-{version}.tar.gz"
    )
    # Extract beside the cache and rename: an interrupted extraction never
    # passes for a complete one.
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        with tarfile.open(sdist) as archive:
            _extract_data(archive, Path(scratch))
        (Path(scratch) / f"django-{version}").rename(source)
    return source / "tests"


def _extract_data(archive: tarfile.TarFile, target: Path) -> None:
    """Extract regular files and directories under ``target`` only.

    Python 3.11.4+ does this with ``filter="data"``; Debian 12's 3.11.2 has no
    such argument (CI may build the virtualenv from it), so the same rules
    are checked here: no absolute or escaping path, no link, no device.
    """
    if hasattr(tarfile, "data_filter"):
        archive.extractall(target, filter="data")
        return
    root = target.resolve()
    for member in archive.getmembers():
        destination = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not destination.is_relative_to(
            root
        ):
            raise RuntimeError(f"refusing to extract {member.name!r} from the sdist")
    archive.extractall(target)


def _write_stub_extensions(base: Path) -> None:
    """Write do-nothing extensions under ``base/extension`` the server can read."""
    folder = base / "extension"
    folder.mkdir(parents=True)
    for path in (base, folder):
        path.chmod(0o755)
    for name in STUB_EXTENSIONS:
        control = folder / f"{name}.control"
        control.write_text(
            f"comment = 'stand-in for {name}, absent from the embedded build'\n"
            "default_version = '1.0'\n"
        )
        script = folder / f"{name}--1.0.sql"
        script.write_text("-- intentionally empty\n")
        for path in (control, script):
            path.chmod(0o644)


def _configure(data_dir: Path, stubs: Path) -> None:
    """Adapt the fresh cluster to the suite; new databases copy template1."""
    conn = psycopg2.connect(
        **embedded_pg.connect_kwargs(data_dir, "template1"), connect_timeout=10
    )
    try:
        conn.autocommit = True  # ALTER SYSTEM refuses to run in a transaction
        with conn.cursor() as cur:
            path = sql.Literal(f"$system:{stubs}")
            cur.execute(
                sql.SQL("ALTER SYSTEM SET extension_control_path = {}").format(path)
            )
            # Throwaway data: durability only costs time.
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                cur.execute(
                    sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting))
                )
            cur.execute("SELECT pg_reload_conf()")
            cur.execute(
                sql.SQL('CREATE COLLATION {} FROM "C"').format(
                    sql.Identifier(STUB_COLLATION)
                )
            )
    finally:
        conn.close()  # CREATE DATABASE fails while anyone is on template1


@contextmanager
def throwaway_cluster() -> Iterator[Path]:
    """A new embedded PostgreSQL in a temp dir, stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="django-suite-"))
    # The server (under root, its own user) reads the stub extensions in here.
    base.chmod(0o755)
    data_dir = base / "pg"
    try:
        _write_stub_extensions(base / "stubs")
        embedded_pg.ensure_running(data_dir, "postgres")
        _configure(data_dir, base / "stubs")
        yield data_dir
    finally:
        try:
            embedded_pg.remove(data_dir)
        finally:
            shutil.rmtree(base, ignore_errors=True)


class Runner:
    """Starts runtests.py processes and stops whichever are left on the way out."""

    def __init__(self, tests_dir: Path, data_dir: Path, timeout: float) -> None:
        self.tests_dir = tests_dir
        self.data_dir = data_dir
        self.timeout = timeout
        self.logs = CACHE / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._live: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def _environment(self, backend: str, database: str, results: Path) -> dict:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=embedded_pg.url(self.data_dir, "postgres"),
            DJANGO_SUITE_BACKEND=backend,
            DJANGO_SUITE_DB=database,
            DJANGO_SUITE_RESULTS=str(results),
            PYTHONPATH=os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            ),
            # Stock is the service's no-pool configuration; ours its default
            # (empty means unset, and wins over .env).
            DB_POOL_SIZE="0" if backend == "stock" else "",
            GEVENT_PATCH="1",
        )
        return env

    def run(self, backend: str, mode: str, labels: list[str], label: str) -> Run:
        """Run runtests.py for ``labels``; collect outcomes, time and any crash."""
        name = f"{backend}-{mode}-{label}"
        run = Run(backend, mode, label, log=self.logs / f"{name}.log")
        results = self.logs / f"{name}.json"
        results.unlink(missing_ok=True)
        runtests = str(self.tests_dir / "runtests.py")
        entry = (
            [runtests]
            if mode == "plain"
            else ["-m", "tests.django_suite.green_runtests", runtests]
        )
        # Django's test databases clone by template, which a pool's idle
        # connection to the original blocks: ours cannot run --parallel.
        command = [sys.executable, *entry, "--settings", SETTINGS, "--noinput"]
        command += ["--parallel", "1", *labels]
        env = self._environment(backend, f"djs_{backend}_{mode}_{label}", results)
        started = time.monotonic()
        with run.log.open("w") as log, self._lock:
            if self._stopping:
                run.crash = "interrupted"
                return run
            # Own session: Ctrl-C reaches us alone, and a kill takes the group.
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._live[process.pid] = process
        try:
            process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            run.crash = f"timed out after {self.timeout:.0f} s"
        finally:
            with self._lock:
                self._live.pop(process.pid, None)
        run.seconds = time.monotonic() - started
        if results.is_file():
            payload = json.loads(results.read_text())
            run.outcomes = payload["tests"]
            if not payload["finished"] and not run.crash:
                run.crash = "failed after its tests (database teardown?)"
        elif not run.crash:
            run.crash = "no results (failed before its tests ran)"
        if not run.outcomes and not run.crash:
            run.crash = "ran no tests"
        # A label that does not import becomes one failing test of this name.
        unloaded = [
            test_id.rpartition(".")[2]
            for test_id in run.outcomes
            if test_id.startswith("unittest.loader._FailedTest.")
        ]
        if unloaded and not run.crash:
            run.crash = f"could not load {', '.join(unloaded)}"
        return run

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait()

    def stop_all(self) -> None:
        """Start no more runs; kill those still going (only processes started here)."""
        with self._lock:
            self._stopping = True
            live = list(self._live.values())
        for process in live:
            self._kill(process)


def _rerun_labels(test_ids: list[str]) -> list[str]:
    """The apps of the given tests: what a second look at them has to run.

    Not the tests alone: pooled connections carry state from one test to the
    next, and a test that fails only after others ran is no flake. Test ids
    are dotted paths from the app, or "setUpClass (app.module.Class)".
    """
    paths = (re.sub(r"^\w+ \((.+)\)$", r"\1", test_id) for test_id in test_ids)
    return sorted({path.split(".")[0] for path in paths})


def _differences(stock: Run, ours: Run) -> list[str]:
    return sorted(
        test_id
        for test_id in stock.outcomes.keys() | ours.outcomes.keys()
        if stock.outcome(test_id) != ours.outcome(test_id)
    )


def _exception_line(message: str) -> str:
    """The exception part of a formatted traceback, on one line."""
    lines = message.rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    tail = lines[frames[-1] + 1 :] if frames else lines
    text = " ".join(line.strip() for line in tail if not line.startswith(" "))
    return text[:200]


def _table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns; the last one, a message, is left ragged."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(
            [*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]]
        )
        for row in rows
    )


def _run_and_rerun(
    runner: Runner, apps: list[str], jobs: int
) -> tuple[dict[tuple[str, str], Run], dict[tuple[str, str], Run]]:
    """The four full runs, then both backends again on each mode's differences."""
    plan = [(backend, mode) for mode in MODES for backend in BACKENDS]
    pool = ThreadPoolExecutor(jobs)
    try:
        futures = {key: pool.submit(runner.run, *key, apps, "full") for key in plan}
        runs = {}
        for key, future in futures.items():
            runs[key] = future.result()
            print(runs[key].summary(), flush=True)
        rerun_futures = {}
        for mode in MODES:
            stock, ours = runs["stock", mode], runs["ours", mode]
            differing = _differences(stock, ours)
            if stock.crash or ours.crash or not differing:
                continue
            if len(differing) > RERUN_LIMIT:
                print(f"{mode}: {len(differing)} differences, too many to re-run")
                continue
            print(
                f"{mode}: {len(differing)} differences; re-running their apps",
                flush=True,
            )
            for backend in BACKENDS:
                rerun_futures[backend, mode] = pool.submit(
                    runner.run, backend, mode, _rerun_labels(differing), "rerun"
                )
        reruns = {key: future.result() for key, future in rerun_futures.items()}
    finally:
        # Interrupted: nothing may outlive us, nor keep the cluster from stopping.
        runner.stop_all()
        pool.shutdown(cancel_futures=True)
    for rerun in reruns.values():
        print(rerun.summary(), flush=True)
    return runs, reruns


def _report(
    runs: dict[tuple[str, str], Run],
    reruns: dict[tuple[str, str], Run],
    seconds: float,
) -> int:
    """Print crashes, confirmed differences and flakes; return the exit status."""
    failed = False
    rows = [("mode", "test", "stock", "ours", "ours' failure")]
    flakes = []
    details = []
    for run in [*runs.values(), *reruns.values()]:
        if run.crash:
            failed = True
            print(f"\n{run.backend} {run.mode} ({run.label}) CRASHED: {run.crash}")
            print(f"  log: {run.log}")
    for mode in MODES:
        stock, ours = runs["stock", mode], runs["ours", mode]
        if not stock.outcomes or not ours.outcomes:
            continue  # a crash before any test: reported above, nothing to compare
        rerun = (reruns.get(("stock", mode)), reruns.get(("ours", mode)))
        for test_id in _differences(stock, ours):
            if all(rerun) and not any(r.crash for r in rerun):
                again = {r.outcome(test_id) for r in rerun}
                if len(again) == 1 and again != {ABSENT}:
                    flakes.append(
                        f"{mode:6}  {test_id}  ({stock.outcome(test_id)}"
                        f" vs {ours.outcome(test_id)}, then {again.pop()})"
                    )
                    continue
            failed = True
            message = ours.outcomes.get(test_id, {}).get("message", "")
            rows.append(
                (
                    mode,
                    test_id,
                    stock.outcome(test_id),
                    ours.outcome(test_id),
                    _exception_line(message),
                )
            )
            details.append(
                f"== {mode} {test_id}\n--- stock: {stock.outcome(test_id)}\n"
                f"{stock.outcomes.get(test_id, {}).get('message', '')}\n"
                f"--- ours: {ours.outcome(test_id)}\n{message}\n"
            )
    report = CACHE / "differences.txt"
    report.write_text("\n".join(details))
    if len(rows) > 1:
        print(f"\nOur backend differs from stock in {len(rows) - 1} test(s):")
        print(_table(rows[: TABLE_LIMIT + 1]))
        if len(rows) > TABLE_LIMIT + 1:
            print(f"... and {len(rows) - TABLE_LIMIT - 1} more")
        print(f"Tracebacks: {report}")
    if flakes:
        print("\nFlaky (differed once, agreed on re-run):")
        print("\n".join(flakes))
    verdict = "FAILED" if failed else "passed: our backend matches stock"
    print(f"\ndjango-suite {verdict} ({seconds:.0f} s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the four suites, compare, re-run differences; 0 when ours matches stock."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.django_suite.run", description=__doc__
    )
    parser.add_argument(
        "--apps", default=",".join(APPS), help="comma-separated test apps"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument(
        "--timeout", type=float, default=1200, help="seconds one run may take"
    )
    args = parser.parse_args(argv)
    apps = args.apps.split(",")

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A CI timeout's SIGTERM must stop the cluster too.
    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    tests_dir = django_tests_dir(pinned_django_version())
    print(f"Django's tests from {tests_dir}; apps: {' '.join(apps)}", flush=True)
    with throwaway_cluster() as data_dir:
        runs, reruns = _run_and_rerun(
            Runner(tests_dir, data_dir, args.timeout), apps, args.jobs
        )
    return _report(runs, reruns, time.monotonic() - started)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("django-suite interrupted; its PostgreSQL is stopped")
