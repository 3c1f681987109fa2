"""The kernel's scheduler counters of one thread (``/proc/<pid>/task/<tid>/schedstat``).

Two of its fields, in nanoseconds: time spent on a CPU, and time spent
runnable but waiting for one (what PSI's ``cpu some`` sums over tasks). Finer
than ``/proc/<pid>/stat``'s user and system times, which move in 10 ms ticks.
"""

import os
import threading


def thread_path(pid: int | str = "self", tid: int | None = None) -> str:
    """The schedstat file of thread ``tid`` (default: the calling one) of ``pid``."""
    return f"/proc/{pid}/task/{tid or threading.get_native_id()}/schedstat"


def read_ns(path: str) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting for one) from ``path``; None if it cannot be read
    (a kernel without schedstat, a thread that has ended)."""
    try:
        with open(path, "rb") as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds so far of all of ``pid``'s threads; None where there is no
    schedstat or no such process. A thread that ends while being read counts
    no more."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    read_any = False
    for tid in tasks:
        times = read_ns(thread_path(pid, int(tid)))
        if times is not None:
            total += times[0]
            read_any = True
    return total / 1e9 if read_any else None
