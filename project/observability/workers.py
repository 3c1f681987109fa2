"""What gunicorn's worker hooks do for observability (gunicorn.conf.py calls them)."""

from typing import Any

from project.core import metrics

from . import loop


def worker_started(worker: Any) -> None:
    """``post_worker_init``: start the worker's event-loop monitor."""
    loop.start()


def worker_exiting(worker: Any) -> None:
    """``worker_exit`` (in the worker): count a recycle after ``max_requests``,
    and write the samples still batched.

    Other exits (a shutdown, a heartbeat timeout, a crash) are not recycles.
    """
    if metrics.enabled():
        if worker.nr >= worker.max_requests:
            metrics.WORKER_RECYCLES.inc()
        metrics.flush_batched()
