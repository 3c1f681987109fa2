"""Start processes on loopback, and stop exactly those.

``Processes`` is a context manager: everything started through it (the stub
upstream, gunicorn, Locust, the stack's services) is stopped when the block
ends, newest first, by the process handle it was started with.
"""

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

BASE_DIR = Path(__file__).resolve().parent.parent


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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

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
