"""The directory prometheus_client's multiprocess mode shares between workers.

Used by gunicorn's master (stdlib only: the master imports neither Django nor
prometheus_client's value classes). The directory must exist, and hold no
samples of an earlier run, before the first worker imports prometheus_client.
"""

import glob
import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> tuple[str, bool]:
    """Make ``PROMETHEUS_MULTIPROC_DIR`` fresh (a new temporary one when unset).

    Returns the path and whether it was created here (and so is ours to
    remove at exit). A directory given by the operator is kept, emptied of
    ``*.db`` sample files: a series left from a previous run would be stale.
    """
    path = os.environ.get(MULTIPROC_ENV, "")
    created = not path
    if created:
        path = tempfile.mkdtemp(prefix="gevent-django-metrics-")
    else:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    os.environ[MULTIPROC_ENV] = path
    return path, created


def mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, os.environ.get(MULTIPROC_ENV))


def remove(path: str) -> None:
    """Remove a directory ``prepare`` created."""
    shutil.rmtree(path, ignore_errors=True)
