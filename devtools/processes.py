"""Start processes on loopback, and stop exactly those.

``Processes`` is a context manager: everything started through it (the stub
upstream, gunicorn, Locust, the stack's services) is stopped when the block
ends, newest first, by the process handle it was started with. That includes
a block ended by SIGTERM (``timeout``, CI, ``kill``): Python's default for it
exits without unwinding, and a ``make storm`` stopped that way left its
gunicorn, stub upstream and wrk running.
"""

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Self

BASE_DIR = Path(__file__).resolve().parent.parent
# What a process ended by SIGTERM exits with (128 + 15), as if not caught.
SIGTERM_EXIT = 143


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(SIGTERM_EXIT)


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a process we started and wait for it; SIGKILL it if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Processes:
    """The processes one command started; all stopped when the ``with`` block ends."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []
        # Servers by base URL, for callers that watch their workers.
        self.servers: dict[str, subprocess.Popen] = {}
        self._sigterm_before: Any = None

    def __enter__(self) -> Self:
        # The outermost block of the main thread turns SIGTERM into SystemExit,
        # so every block unwinds and stops what it started.
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            self._sigterm_before = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop_all()
        finally:
            if self._sigterm_before is not None:
                signal.signal(signal.SIGTERM, self._sigterm_before)
                self._sigterm_before = None

    def stop_all(self) -> None:
        """Stop everything started here, newest first."""
        while self.started:
            stop(self.started.pop())

    def log_path(self, name: str) -> Path | None:
        """Where the output of the process called ``name`` goes (None: nowhere)."""
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

    def popen(self, args: list[str], name: str, **kwargs: Any) -> subprocess.Popen:
        """Start ``args`` (cwd: the project unless given); output, unless redirected,
        appended to ``log_path(name)``."""
        path = None if "stdout" in kwargs else self.log_path(name)
        log = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = path.open("a")
        kwargs.setdefault("stdout", log or subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        try:
            process = subprocess.Popen(args, **{"cwd": BASE_DIR, **kwargs})
        finally:
            if log is not None:
                log.close()
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        """Stop one process started here."""
        stop(process)
        self.started.remove(process)

    def start_upstream(self, **popen_kwargs: Any) -> str:
        """Start the stub upstream (``devtools.upstream``) on a free port; return
        its base URL.

        ``popen_kwargs`` go to ``subprocess.Popen`` (e.g. ``process_group=0``).
        """
        process = self.popen(
            [sys.executable, "-m", "devtools.upstream", "--port", "0"],
            "upstream",
            stdout=subprocess.PIPE,
            text=True,
            **popen_kwargs,
        )
        assert process.stdout is not None  # stdout=PIPE
        line = process.stdout.readline()
        process.stdout.close()
        match = re.search(r"http://[\d.]+:\d+", line)
        if not match:
            raise RuntimeError(f"stub upstream did not start: {line!r}")
        return match.group(0)
