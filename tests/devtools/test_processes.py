"""Processes: what a command starts is stopped when it ends, SIGTERM included."""

import os
import signal
import subprocess
import sys
import time

from devtools.processes import BASE_DIR, SIGTERM_EXIT

SCRIPT = """
import sys, time
from devtools.processes import Processes
with Processes() as processes:
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = processes.popen(sleep, "child")
    print(child.pid, flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_stops_what_the_block_started() -> None:
    """A command ended by SIGTERM (``timeout``, CI) stops its children first and
    exits 143; before, Python's default left them running."""
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == SIGTERM_EXIT
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
