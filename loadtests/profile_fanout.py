"""Where a gevent worker's CPU goes on W1 or W2: py-spy on gunicorn's workers.

Starts the project's gunicorn (2 gevent workers) as ``python -m loadtests.bench``
does for the workload (W1 with the stub upstream, W2 on the development
database), drives it at ``--users`` for ``--seconds``, and samples
both workers with ``py-spy record`` (raw collapsed stacks) in the middle of the
run. Prints the share of on-CPU samples that pass through each part of the
path (inclusive: a sample in ``json`` called from the HTTP client counts for
both) and the packages where the time is finally spent (self time).
``--rev REV`` profiles another commit instead (a temporary git worktree), for a
before/after comparison; ``--env KEY=VALUE[,KEY=VALUE]`` sets the server's
settings (W2 against Django's pool runs with ``DB_POOL_SIZE=32``, as the bench
does). py-spy is a development tool, not a requirement:
``.venv/bin/pip install py-spy`` first; it needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``).

Usage: ``python -m loadtests.profile_fanout [--workload W1|W2] [--users 100]
[--seconds 20] [--rev REV] [--env KEY=VALUE[,KEY=VALUE]] [--keep FILE]``
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from devtools.processes import Processes
from loadtests.harness.checkout import checkout
from loadtests.harness.locust_run import locust_args
from loadtests.harness.paths import BASE_DIR
from loadtests.harness.servers import database_url, start_server
from loadtests.harness.workloads import WORKLOADS
from loadtests.harness.workloads.base import ENV_PREFIX, env_override

# Inclusive categories: a sample counts when any of its frames comes from a
# file whose path (as py-spy prints it, relative to sys.path) starts with one
# of the prefixes.
PARTS = {
    "outbound HTTP client, all of it": (
        "requests/",
        "urllib3/",
        "geventhttpclient/",
        "project/core/outbound/",
    ),
    "  requests": ("requests/",),
    "  urllib3": ("urllib3/",),
    "  geventhttpclient": ("geventhttpclient/",),
    "socket send/recv (syscalls)": ("gevent/_socketcommon.py",),
    "inbound HTTP server (gunicorn, pywsgi)": ("gunicorn/", "gevent/pywsgi.py"),
    "Django request handling": ("django/core/handlers/",),
    "database (Django's layer, the pool, psycopg2)": (
        "django/db/",
        "project/core/pg_pool/",
        "psycopg2/",
        "psycogreen/",
    ),
    "  Django middleware": ("django/middleware/", "django/contrib/"),
    "JSON encode/decode": ("json/",),
    "logging": ("logging/",),
    "typing (Protocol isinstance)": ("typing.py",),
    "gevent.Timeout set-up": ("gevent/timeout.py",),
}


# Exclusive components: a sample is charged to the innermost frame of the
# service's own path that matches one (gevent's and native frames are skipped
# as plumbing: a socket read charges whoever called it), so the shares add up
# to 100 % and say what each piece costs per request. A middleware is charged
# by its class name (its own frames only: what it calls is charged there).
COMPONENTS = {
    "JSON encode/decode": ("json/",),
    "logging": (
        "logging/",
        "project/server/log_format.py",
        "project/server/log_filters.py",
        "project/server/access_log.py",
    ),
    "metrics": (
        "prometheus_client/",
        "project/core/metrics.py",
        "project/core/upstream_metrics.py",
    ),
    "HTTP client (outbound)": ("geventhttpclient/", "project/core/outbound/"),
    "fan-out machinery": ("project/core/fanout.py", "project/core/fair_share.py"),
    "request context (deadline, caller, request id)": (
        "project/core/deadline.py",
        "project/core/caller.py",
        "project/core/request_context.py",
        "contextvars",
    ),
    "admission": ("project/server/admission/", "project/core/route_priority.py"),
    "middleware": ("project/http/middleware.py", "project/observability/middleware.py"),
    "view (project/demo, project/http)": ("project/demo/", "project/http/"),
    "our gunicorn worker": ("project/server/worker.py",),
    "connection pool (project/core/pg_pool)": ("project/core/pg_pool/",),
    "database driver (psycopg2, psycogreen)": ("psycopg2/", "psycogreen/"),
    "Django's database layer": ("django/db/",),
    "gunicorn (parse, write)": ("gunicorn/",),
    "Django request handling": ("django/", "asgiref/"),
}
PLUMBING = ("gevent/", "greenlet")
HUB = "gevent hub (loop, switches, timers)"


def component_of(frames: list[str]) -> str:
    """The component a sample's stack (root first) is charged to."""
    for frame in reversed(frames):
        path = frame_file(frame)
        if not path or path.startswith(PLUMBING):
            continue
        for component, fragments in COMPONENTS.items():
            if path.startswith(fragments):
                if component == "middleware":
                    owner = frame.split(" (", 1)[0].split(".", 1)[0]
                    return f"middleware: {owner}"
                return component
        return "other: " + package_of(path)
    return HUB


def frame_file(frame: str) -> str:
    """The file path of a py-spy frame ``function (path:line)``; '' if none."""
    if frame.endswith(")") and " (" in frame:
        return frame.rsplit(" (", 1)[1].rsplit(":", 1)[0]
    return ""


def package_of(path: str) -> str:
    """Group a frame's file: ``project/<app>``, else its top-level package."""
    if not path:
        # Process frames and C code: greenlet switches, syscalls, the C parser.
        return "(native)"
    parts = path.split("/")
    if parts[0] == "project" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def summarise(
    raw: Path,
) -> tuple[int, dict[str, int], collections.Counter, collections.Counter]:
    """Parse collapsed stacks: (total samples, inclusive counts, self counts by
    package, exclusive counts by component)."""
    total = 0
    inclusive = dict.fromkeys(PARTS, 0)
    leaf: collections.Counter = collections.Counter()
    components: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        files = [frame_file(frame) for frame in frames]
        total += count
        for part, fragments in PARTS.items():
            if any(f.startswith(fragments) for f in files):
                inclusive[part] += count
        leaf[package_of(next((f for f in reversed(files) if f), ""))] += count
        components[component_of(frames)] += count
    return total, inclusive, leaf, components


def record(master_pid: int, seconds: int, out: Path) -> None:
    """Sample the master's worker processes with py-spy for ``seconds``."""
    subprocess.run(
        [
            shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(master_pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "200",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )


def main(argv: list[str] | None = None) -> int:
    """Profile one run and print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("W1", "W2"), default="W1")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rev", help="profile this git revision instead")
    parser.add_argument("--keep", type=Path, help="also save the raw stacks here")
    parser.add_argument(
        "--env", default="", metavar="KEY=VALUE[,KEY=VALUE]", help="server settings"
    )
    args = parser.parse_args(argv)
    try:
        overrides = env_override(ENV_PREFIX + args.env) if args.env else {}
    except ValueError as exc:
        parser.error(f"--env {exc}")
    workload = WORKLOADS[args.workload]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        tree = stack.enter_context(checkout(args.rev, workdir)) if args.rev else None
        processes = stack.enter_context(Processes())
        upstream = processes.start_upstream() if workload.needs_upstream else ""
        base = start_server(
            processes,
            database_url=workload.server_database_url(database_url()),
            env={**workload.server_env(upstream), **(overrides or {})},
            tree=tree or BASE_DIR,
        )
        # Runs past the sampling window, so every sample is under full load.
        (workdir / "locust").mkdir()
        locust = processes.popen(
            locust_args(
                [workload.locustfile],
                host=base,
                users=args.users,
                seconds=args.seconds + 10,
                report_dir=workdir / "locust",
            ),
            "locust",
            env={**os.environ, **workload.locust_env()},
        )
        # Skip the ramp: users start at once, connections open in the first seconds.
        time.sleep(5)
        raw = workdir / "stacks.txt"
        record(processes.servers[base].pid, args.seconds, raw)
        processes.stop(locust)
        if args.keep:
            shutil.copyfile(raw, args.keep)
        total, inclusive, leaf, components = summarise(raw)
    label = args.rev or "this tree"
    settings = f" ({args.env})" if args.env else ""
    print(
        f"{workload.name} at {args.users} users, {label}{settings}: "
        f"{total} on-CPU samples in workers"
    )
    print("| part of the path (inclusive) | share of worker CPU |")
    print("|---|---|")
    for part, count in inclusive.items():
        print(f"| {part} | {100 * count / max(total, 1):.1f}% |")
    print("\n| component (exclusive: its own frames) | share of worker CPU |")
    print("|---|---|")
    for component, count in components.most_common():
        print(f"| {component} | {100 * count / max(total, 1):.1f}% |")
    print("\n| package (self time) | share |")
    print("|---|---|")
    for package, count in leaf.most_common(12):
        print(f"| {package} | {100 * count / max(total, 1):.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
