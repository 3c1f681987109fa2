"""A whole stack (``python -m deploy.stack``) for the tests of this directory.

The stack runs as a subprocess, exactly as ``make stack`` runs it, against a
database of its own (``stack``) in the tests' throwaway cluster
(``.data/postgres-test``), never the development data.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.stack import find_binary
from devtools.processes import stop
from tests.helpers import BASE_DIR
from tests.stack.helpers import RunningStack, wait_for_state


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """A running stack (nginx, two gunicorns, PgBouncer, PostgreSQL, stub upstream)."""
    for name in ("nginx", "pgbouncer", "redis-server"):
        if find_binary(name) is None:
            pytest.skip(f"{name} is not installed (apt-get install {name})")
    from project import embedded_pg

    # The stack sets its run dir's permissions itself: it gets a parent every
    # user may enter, as .data/ is, and makes the run dir there.
    parent = Path(tempfile.mkdtemp(prefix="stack-test-"))
    parent.chmod(0o755)
    run_dir = parent / "run"
    output = parent / "stack.out"
    output.touch(mode=0o600)
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.stack", "--run-dir", str(run_dir)]
            + ["--pg-data", str(embedded_pg.TEST_DATA_DIR), "--database", "stack"]
            + ["--demo"],
            cwd=BASE_DIR,
            env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningStack(process, run_dir, output)
    try:
        wait_for_state(running)
        yield running
    finally:
        stop(process, timeout=60)
        shutil.rmtree(parent, ignore_errors=True)
