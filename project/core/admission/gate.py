"""Admission control for one worker: a concurrency limit and a short wait line.

Every request (but the exempt ones) asks the gate before any work is done for
it. Under the limit it runs at once. Over it, it may wait for a slot, in
priority order, for at most the queue timeout; otherwise it is refused at once
with a reason:

- ``limit``: over the limit, and a slot is not expected within the timeout
  (or the request is sheddable and the worker is overloaded);
- ``queue``: it waited the whole timeout without a slot;
- ``deadline``: its deadline would pass before a slot is expected (or had
  passed when the slot came), so starting it would only waste the work.

The queue timeout follows CoDel as Facebook's servers use it (Wangle's
"adaptive LIFO + CoDel"): while the worker is not overloaded a burst may wait
up to ``queue_timeout_s``; once it is (requests were refused, or even the
quickest admission of an interval waited past ``queue_target_s``), waits are
capped at ``queue_target_s`` and sheddable requests do not wait at all, so a
standing line cannot form and admitted requests keep their latency.

The limit itself (``limit.py``) moves once per ``interval_s`` on two
congestion signals measured inside the worker, not inferred from latency: the
event loop's busy fraction (CPU) and the age of the oldest checkout waiting
at the database pool (the pool). Latency-driven limits (Netflix's Gradient2
and Vegas, Envoy's adaptive concurrency filter) compare latency with its
minimum; in a gevent worker most latency is waiting on upstreams, which costs
nothing, so a slow upstream would wrongly shrink the limit and a mix of fast
and slow routes has no meaningful minimum.

The CPU signal is smoothed over about 0.3 s: a burst of arrivals (a hundred
slow, cheap requests at once) keeps the loop busy for a tick or two and must
not cut the limit; sustained congestion does within a second. A floor from
Little's law (best completion rate x quickest service, as Kratos' BBR limiter
and Alibaba Sentinel use) was tried and dropped: under overload the service
times it multiplies grow with the overload, and the floor held the limit at
whatever was already in flight.
"""

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import gevent
from gevent.event import Event

from .limit import AdaptiveLimit, LimitConfig
from .routes import Priority

LIMIT = "limit"
QUEUE = "queue"
DEADLINE = "deadline"
# Not answered at all: the client left while its request waited for a slot.
CLIENT_GONE = "client_gone"

QUEUED_PRIORITIES = (Priority.CRITICAL, Priority.NORMAL, Priority.SHEDDABLE)
# Weight of the newest interval in the smoothed busy fraction (about 0.3 s).
CPU_SMOOTHING = 0.3


@dataclass(frozen=True)
class GateConfig:
    """The gate's targets and timeouts (``SHED_*`` settings)."""

    limit: LimitConfig = field(default_factory=LimitConfig)
    interval_s: float = 0.1
    cpu_target: float = 0.85
    pool_wait_target_s: float = 0.02
    queue_timeout_s: float = 0.1
    queue_target_s: float = 0.005
    # /readyz says "overloaded" until this long after the last refusal.
    ready_hold_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.01 <= self.interval_s <= 10.0:
            raise ValueError(f"interval must be 10 ms to 10 s, got {self.interval_s}")
        if not 0.1 <= self.cpu_target <= 1.0:
            raise ValueError(f"CPU target must be 0.1 to 1.0, got {self.cpu_target}")
        if not 0.0 <= self.queue_target_s <= self.queue_timeout_s:
            raise ValueError(
                "the queue target must be from 0 to the queue timeout "
                f"({self.queue_target_s} > {self.queue_timeout_s})"
            )


class Decision(NamedTuple):
    """What the gate decided: ``reason`` None means admitted (release it)."""

    reason: str | None
    waited_s: float = 0.0


ADMITTED = Decision(None)


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = Event()
        self.granted = False


@dataclass
class Verdict:
    """The signals and outcome of the last control interval (logs, metrics)."""

    busy: float = 0.0
    pool_wait_s: float = 0.0
    congested: bool = False
    binding: bool = False


class Gate:
    """One worker's limit, in-flight count, wait lines and refusal counts."""

    # What the current control interval has seen (reset by tick()).
    _peak: int
    _contended: bool
    _refusals_now: bool
    _min_sojourn: float
    _completions: int

    def __init__(
        self,
        config: GateConfig,
        *,
        cpu: Callable[[], float] | None = None,
        pool_wait: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.limit = AdaptiveLimit(config.limit)
        self._cpu = cpu
        self._pool_wait = pool_wait
        self._clock = clock
        self.in_flight = 0
        self.queued = 0
        self._lines: dict[Priority, deque[_Waiter]] = {
            p: deque() for p in QUEUED_PRIORITIES
        }
        # Cumulative refusals by (reason, priority name).
        self.refused: Counter[tuple[str, str]] = Counter()
        self.overloaded = False
        self.completion_rate = 0.0
        self.busy = 0.0
        self.verdict = Verdict()
        self._last_refusal = -math.inf
        self._last_tick = clock()
        self._pool_congested_before = False
        self._greenlet: gevent.Greenlet | None = None
        self._reset_interval()

    # --- the request path ---------------------------------------------------

    def enter(self, priority: Priority, deadline_at: float) -> Decision:
        """Admit a request of ``priority`` due by ``deadline_at`` (clock time),
        after waiting if need be, or refuse it."""
        if self.in_flight < self.limit.value and not self._ahead(priority):
            self._admit_now()
            return ADMITTED
        now = self._clock()
        self._contended = True
        remaining = deadline_at - now
        timeout = self._queue_timeout(priority)
        expected = self._expected_wait(priority)
        if remaining <= 0 or expected >= remaining:
            return self._refuse(DEADLINE, priority, now)
        if timeout <= 0 or expected > timeout:
            return self._refuse(LIMIT, priority, now)
        waiter = _Waiter()
        self._lines[priority].append(waiter)
        self.queued += 1
        waiter.event.wait(min(timeout, remaining))
        later = self._clock()
        if not waiter.granted:
            self._lines[priority].remove(waiter)
            self.queued -= 1
            return self._refuse(
                DEADLINE if remaining <= timeout else QUEUE, priority, later
            )
        waited = later - now
        self._min_sojourn = min(self._min_sojourn, waited)
        if later >= deadline_at:
            self.leave()
            return self._refuse(DEADLINE, priority, later)
        return Decision(None, waited)

    def leave(self) -> None:
        """Release an admitted request's slot (to the first waiter, if any)."""
        self.in_flight -= 1
        self._completions += 1
        self._grant_free_slots()

    def client_gone(self, priority: Priority) -> None:
        """Count a request whose client left while it waited (its slot is released)."""
        self.refused[(CLIENT_GONE, priority.name.lower())] += 1
        self.leave()

    def shedding(self) -> bool:
        """True while requests were refused within ``ready_hold_s`` (/readyz)."""
        return self._clock() - self._last_refusal < self.config.ready_hold_s

    # --- the control loop ---------------------------------------------------

    def tick(self) -> Verdict:
        """One control interval: move the limit, the CoDel mode and the rates."""
        cfg = self.config
        now = self._clock()
        elapsed = max(now - self._last_tick, 1e-6)
        # Smoothed: a burst of arrivals that keeps the loop busy for a tick or
        # two (a hundred slow, cheap requests at once) is not congestion.
        busy = self.busy = (
            CPU_SMOOTHING * (self._cpu() if self._cpu else 0.0)
            + (1 - CPU_SMOOTHING) * self.busy
        )
        pool_wait = self._pool_wait() if self._pool_wait else 0.0
        pool_congested = pool_wait >= cfg.pool_wait_target_s
        # The pool must have a line at two ticks running: one slow checkout
        # in a burst is not a standing queue.
        congested = busy >= cfg.cpu_target or (
            pool_congested and self._pool_congested_before
        )
        self._pool_congested_before = pool_congested
        binding = self._contended or self._peak >= self.limit.value
        rate = self._completions / elapsed
        self.limit.update(
            congested=congested, binding=binding, peak_in_flight=self._peak
        )
        if math.isinf(self._min_sojourn):  # nobody admitted this interval
            standing_line = self.queued > 0
        else:
            standing_line = self._min_sojourn > cfg.queue_target_s
        self.overloaded = self._refusals_now or standing_line
        self.completion_rate = (
            rate
            if not self.completion_rate
            else (0.7 * self.completion_rate + 0.3 * rate)
        )
        self.verdict = Verdict(busy, pool_wait, congested, binding)
        self._last_tick = now
        self._reset_interval()
        self._grant_free_slots()
        return self.verdict

    def start(self, on_tick: Callable[["Gate"], None] | None = None) -> None:
        """Run ``tick`` every interval in a greenlet (then ``on_tick``)."""
        if self._greenlet is not None:
            return

        def run() -> None:
            while True:
                gevent.sleep(self.config.interval_s)
                self.tick()
                if on_tick is not None:
                    on_tick(self)

        self._greenlet = gevent.spawn(run)

    def stop(self) -> None:
        """Stop the control greenlet."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    # --- internals ------------------------------------------------------------

    def _reset_interval(self) -> None:
        self._peak = self.in_flight
        self._contended = False
        self._refusals_now = False
        self._min_sojourn = math.inf
        self._completions = 0

    def _admit_now(self) -> None:
        self._take_slot()
        self._min_sojourn = 0.0

    def _take_slot(self) -> None:
        self.in_flight += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight

    def _ahead(self, priority: Priority) -> int:
        """Waiters that go before a new request of ``priority``."""
        return sum(len(self._lines[p]) for p in QUEUED_PRIORITIES if p <= priority)

    def _expected_wait(self, priority: Priority) -> float:
        # Slots free at the recent completion rate; unknown yet: the timeout decides.
        if not self.completion_rate:
            return 0.0
        return (self._ahead(priority) + 1) / self.completion_rate

    def _queue_timeout(self, priority: Priority) -> float:
        if not self.overloaded:
            return self.config.queue_timeout_s
        return 0.0 if priority is Priority.SHEDDABLE else self.config.queue_target_s

    def _refuse(self, reason: str, priority: Priority, now: float) -> Decision:
        self.refused[(reason, priority.name.lower())] += 1
        self._last_refusal = now
        self._refusals_now = True
        self._contended = True
        return Decision(reason)

    def _grant_free_slots(self) -> None:
        while self.in_flight < self.limit.value:
            waiter = self._next_waiter()
            if waiter is None:
                return
            waiter.granted = True
            waiter.event.set()
            self.queued -= 1
            self._take_slot()

    def _next_waiter(self) -> _Waiter | None:
        for priority in QUEUED_PRIORITIES:
            line = self._lines[priority]
            if line:
                return line.popleft()
        return None
