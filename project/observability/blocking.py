"""gevent's ``EventLoopBlocked`` events: counted, their stacks logged once per site.

gevent's monitor thread (a native thread) notices a greenlet that held the loop
longer than ``loop.MAX_BLOCKING_TIME_S`` and emits the event there. Nothing is
counted or logged from that thread (the patched locks of logging and
prometheus_client belong to the loop): it only takes the blocking stack, while
the loop is still held, and queues it; ``drain`` runs on the loop.
"""

import logging
import sys
import time
import traceback
from collections import deque
from pathlib import Path

from gevent.events import EventLoopBlocked

from project.core import metrics

logger = logging.getLogger(__name__)

PROJECT_DIR = str(Path(__file__).resolve().parent.parent)
# A site is this many of the innermost frames in project/ code.
SITE_FRAMES = 2
# At most one stack logged per interval, and each site once (bounded).
LOG_INTERVAL_S = 10.0
MAX_SITES = 1000
# Episodes queued between two drains: beyond it the oldest are dropped.
MAX_QUEUED = 1000


def site_of(stack: traceback.StackSummary) -> str:
    """The innermost frames of our code, e.g. ``project/demo/views.py:40 delay``."""
    ours = [frame for frame in stack if frame.filename.startswith(PROJECT_DIR)]
    if not ours:
        return "outside project code"
    return " < ".join(
        f"{Path(frame.filename).relative_to(Path(PROJECT_DIR).parent)}:"
        f"{frame.lineno} {frame.name}"
        for frame in reversed(ours[-SITE_FRAMES:])
    )


class BlockedLoopLog:
    """Collects blocked-loop episodes (monitor thread), counts and logs them (loop)."""

    def __init__(self, log_interval: float = LOG_INTERVAL_S) -> None:
        self.log_interval = log_interval
        self.queued: deque[tuple[str, float, list[str]]] = deque(maxlen=MAX_QUEUED)
        self.logged_sites: set[str] = set()
        self.last_log = float("-inf")

    def on_event(self, event: object) -> None:
        """zope.event subscriber, run in the monitor thread: queue the stack."""
        if not isinstance(event, EventLoopBlocked):
            return
        hub = event.hub
        frame = sys._current_frames().get(getattr(hub, "thread_ident", -1))
        stack = traceback.extract_stack(frame) if frame is not None else None
        if stack is None:
            self.queued.append(("unknown", event.blocking_time, list(event.info)))
            return
        self.queued.append((site_of(stack), event.blocking_time, stack.format()))

    def drain(self) -> None:
        """On the loop: count the queued episodes, log new sites (rate-limited)."""
        while self.queued:
            site, threshold, lines = self.queued.popleft()
            metrics.LOOP_BLOCKED.inc()
            now = time.monotonic()
            if site in self.logged_sites or now - self.last_log < self.log_interval:
                continue
            self.last_log = now
            if len(self.logged_sites) < MAX_SITES:
                self.logged_sites.add(site)
            logger.warning(
                "event loop blocked for more than %.3f s at %s:\n%s",
                threshold,
                site,
                "".join(lines).rstrip(),
            )
