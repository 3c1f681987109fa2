"""Admission control for one worker: a concurrency limit and a short wait line.

Every request (but the exempt ones) asks the gate before any work is done for
it. Under the limit it runs at once. Over it, it waits for a slot in priority
order, and round-robin by client within a priority (``fair_line``), for at
most the queue timeout; a request that cannot be served in time is refused
with a reason:

- ``limit``: over the limit, and a slot is not expected within the timeout
  (or the request is sheddable and the worker is overloaded);
- ``queue``: it waited the whole timeout without a slot;
- ``deadline``: its deadline would pass before a slot is expected (or had
  passed when the slot came), so starting it would only waste the work.

Refusing must never cost the capacity it protects. Three rules keep it so:

1. Refusals are budgeted in a storm (``refusal_budget``): clients that retry
   at once cannot turn the worker into a 503 loop. Over the budget a request
   waits for a slot or a token instead of being answered at once.
2. The limit moves on congestion of the admitted work only: the CPU the
   refusals took is not counted, and a database pool line no longer shrinks
   the limit below the pool's size (below it the pool would idle).
3. Overload (the CoDel mode below) is entered only when a request could not
   be served within its queue timeout, not when a line merely stands: a
   closed loop of more clients than slots keeps a line that never grows, and
   serving it in turn costs nothing.

Per-client fair share: when the limit binds, a client holding fewer than its
share of the slots (the limit over the clients holding or wanting one) is
admitted at once, above the limit if need be, while another client holds more
than its share. One client's 200 connections of ten-second requests then
cannot keep every other client waiting for a slot. The borrowing is bounded:
at most the limit again, or, after the limit fell below what a client's
requests admitted earlier still hold, what that client holds past its share.

The queue timeout follows CoDel as Facebook's servers use it (Wangle's
"adaptive LIFO + CoDel"): while the worker is not overloaded a burst may wait
up to ``queue_timeout_s``; once it is (a wait ran out), waits are capped at
``queue_target_s``, sheddable requests do not wait at all and the newest
waiter is served first, until the line has emptied and new requests (not
retries at once) no longer arrive faster than requests complete: a growing
line cannot form and admitted requests keep their latency.

The limit itself (``limit.py``) moves once per ``interval_s`` on two
congestion signals measured inside the worker (``congestion.py`` reads them
and says when work piles up), not inferred from latency: the
event loop's busy fraction (CPU) and the age of the oldest checkout waiting
at the database pool (the pool). Latency-driven limits (Netflix's Gradient2
and Vegas, Envoy's adaptive concurrency filter) compare latency with its
minimum; in a gevent worker most latency is waiting on upstreams, which costs
nothing, so a slow upstream would wrongly shrink the limit and a mix of fast
and slow routes has no meaningful minimum.
"""

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import gevent
from gevent.event import Event

from project.core.route_priority import Priority

from .congestion import Congestion, Interval
from .fair_line import FairLine
from .latency_probe import LatencyProbe
from .limit import AdaptiveLimit, LimitConfig
from .needed import (
    HEADROOM,
    OPEN_MODEL_HEADROOM,
    OUT_OF_SIGHT_HEADROOM,
    NeededConcurrency,
)
from .refusal_budget import RefusalBudget

LIMIT = "limit"
QUEUE = "queue"
DEADLINE = "deadline"
# Not answered at all: the client left while its request waited for a slot.
CLIENT_GONE = "client_gone"

QUEUED_PRIORITIES = (Priority.CRITICAL, Priority.NORMAL, Priority.SHEDDABLE)
# Fewer refusals than this in an interval are no storm, whatever follows them.
STORM_MIN_REFUSALS = 10


@dataclass(frozen=True)
class GateConfig:
    """The gate's targets and timeouts (``SHED_MAX_LIMIT`` and
    ``SHED_QUEUE_TIMEOUT_MS`` come from settings, the rest are these)."""

    limit: LimitConfig = field(default_factory=LimitConfig)
    interval_s: float = 0.1
    # While the event loop is busier than this share of an interval (the
    # refusals' own CPU left out) and more arrives than is served, the limit is
    # capped at 1.5 times the concurrency the routes need (completion rate x
    # shortest latency; three times when what piles up is retries at once): a
    # saturated CPU serves no more for more in flight.
    cpu_target: float = 0.85
    # The limit also falls (never below the pool's size) when the oldest
    # database checkout has waited longer than this and longer each interval at
    # two intervals running, or longer than the queue timeout: the pool is the
    # bottleneck. A short steady line (more clients than connections) is not.
    pool_wait_target_s: float = 0.02
    # Longest wait for a slot; once a wait has run out, waits are cut to the
    # target (CoDel) and sheddable routes do not wait, until the wait line has
    # emptied and new requests no longer arrive faster than they complete.
    queue_timeout_s: float = 0.1
    queue_target_s: float = 0.005
    # /readyz says "overloaded" until this long after the last refusal.
    ready_hold_s: float = 1.0
    # Longest a refusal is held back by the storm budget (Retry-After).
    defer_s: float = 1.0

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
    __slots__ = ("client", "event", "granted", "priority", "refused", "wanted")

    def __init__(self, client: str, priority: Priority) -> None:
        self.client = client
        self.priority = priority
        self.event = Event()
        self.granted = False
        # Why it is to be refused once a token comes, and why it was.
        self.wanted = QUEUE
        self.refused: str | None = None


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
    _timeouts_now: bool
    _emptied: bool
    _refused_count: int
    _retries_now: int
    _completions: int
    _arrivals: int

    def __init__(
        self,
        config: GateConfig,
        *,
        cpu: Callable[[], float] | None = None,
        cpu_or_waiting: Callable[[], float] | None = None,
        pool_wait: Callable[[], float] | None = None,
        pool_size: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.limit = AdaptiveLimit(config.limit)
        self.congestion = Congestion(
            cpu_target=config.cpu_target,
            pool_wait_target_s=config.pool_wait_target_s,
            queue_timeout_s=config.queue_timeout_s,
            cpu=cpu,
            cpu_or_waiting=cpu_or_waiting,
            pool_wait=pool_wait,
        )
        self._pool_size = pool_size
        self._clock = clock
        self.budget = RefusalBudget(clock)
        self.needed = NeededConcurrency()
        self.in_flight = 0
        self.queued = 0
        # Slots held, by client; the most any client holds (refreshed by tick).
        self.held: Counter[str] = Counter()
        self._top_held = 0
        # Cumulative: admissions above the limit (fair share), refusals the
        # budget deferred; the need of the last interval (metrics).
        self.borrowed = 0
        self.deferred = 0
        self.need = 0.0
        self._lines: dict[Priority, FairLine[_Waiter]] = {
            p: FairLine() for p in QUEUED_PRIORITIES
        }
        # Waiters past their wait, in the order they are to be refused.
        self._due: deque[_Waiter] = deque()
        self._dispenser: gevent.Greenlet | None = None
        # Cumulative refusals by (reason, priority name).
        self.refused: Counter[tuple[str, str]] = Counter()
        self.overloaded = False
        self.completion_rate = 0.0
        self.verdict = Verdict()
        self._last_refusal = -math.inf
        self._last_tick = clock()
        self._storm_before = False
        # Relearning the shortest latencies while requests queue out of sight.
        self._probe = LatencyProbe()
        self._greenlet: gevent.Greenlet | None = None
        self._reset_interval()

    # --- the request path ---------------------------------------------------

    def enter(
        self, priority: Priority, deadline_at: float, client: str = ""
    ) -> Decision:
        """Admit a request of ``priority`` from ``client`` due by ``deadline_at``
        (clock time), after waiting if need be, or refuse it."""
        self._arrivals += 1
        if self.in_flight < self.limit.value and not self._ahead(priority):
            self._take_slot(client)
            if not self.queued:
                self._emptied = True
            return ADMITTED
        self._contended = True
        if self._under_share(client):
            self.borrowed += 1
            self._take_slot(client)
            return ADMITTED
        now = self._clock()
        remaining = deadline_at - now
        timeout = self._queue_timeout(priority)
        expected = self._expected_wait(priority)
        reason: str | None = None
        if remaining <= 0 or expected >= remaining:
            reason = DEADLINE
        elif timeout <= 0 or expected > timeout:
            reason = LIMIT
        if reason is not None:
            if self.budget.take():
                return self._refuse(reason, priority, now)
        waiter = _Waiter(client, priority)
        self._lines[priority].push(waiter)
        self.queued += 1
        if reason is None:
            waiter.event.wait(min(timeout, remaining))
            if not (waiter.granted or waiter.refused):
                if remaining <= timeout:  # the deadline ended the wait
                    self._unqueue(waiter)
                    return self._refuse(DEADLINE, priority, self._clock())
                reason = QUEUE
                self._timeouts_now = True
                if self.budget.take():
                    self._unqueue(waiter)
                    return self._refuse(QUEUE, priority, self._clock())
        if not (waiter.granted or waiter.refused):
            # Over the refusal budget: wait on, for a slot or a token.
            waiter.wanted = reason or QUEUE
            self.deferred += 1
            self._due.append(waiter)
            self._start_dispenser()
            # At most Retry-After: what a client that honoured it would have
            # waited before asking again. So a storm's connection gets one
            # refusal a Retry-After, and a refusal held back by mistake (an
            # open model reusing connections) is late by that much at worst,
            # not by its whole deadline (15 s by default).
            waiter.event.wait(
                max(0.0, min(deadline_at, now + self.config.defer_s) - self._clock())
            )
        later = self._clock()
        if waiter.refused is not None:
            return self._refuse(waiter.refused, priority, later)
        if not waiter.granted:
            reason = DEADLINE if later >= deadline_at else waiter.wanted
            waiter.refused = reason  # the dispenser skips it
            self._unqueue(waiter)
            return self._refuse(reason, priority, later)
        waited = later - now
        if later >= deadline_at:
            self.leave(client)
            return self._refuse(DEADLINE, priority, later)
        return Decision(None, waited)

    def contended(self) -> bool:
        """Whether a request arriving now might wait or be refused."""
        return self.in_flight >= self.limit.value or self.queued > 0

    def leave(self, client: str = "", route: str = "", seconds: float = 0.0) -> None:
        """Release an admitted request's slot (to the next waiter, if any);
        a served request names its ``route`` and how long it took."""
        if route:
            self.needed.completed(route, seconds)
        self.in_flight -= 1
        held = self.held[client] - 1
        if held > 0:
            self.held[client] = held
        else:
            del self.held[client]
        self._completions += 1
        self._grant_free_slots()

    def client_gone(self, priority: Priority, client: str = "") -> None:
        """Count a request whose client left while it waited (its slot is released)."""
        self.refused[(CLIENT_GONE, priority.name.lower())] += 1
        self.leave(client)

    def retried_at_once(self) -> None:
        """Count a request that came right after a refusal on its connection
        (the refusal budget's storm signal)."""
        self._retries_now += 1

    def shedding(self) -> bool:
        """True while requests were refused within ``ready_hold_s`` (/readyz)."""
        return self._clock() - self._last_refusal < self.config.ready_hold_s

    # --- the control loop ---------------------------------------------------

    def tick(self) -> Verdict:
        """One control interval: move the limit, the CoDel mode and the rates."""
        now = self._clock()
        elapsed = max(now - self._last_tick, 1e-6)
        read = self.congestion.read(
            Interval(
                elapsed,
                self._arrivals,
                self._retries_now,
                self._completions,
                self._refused_count,
            ),
            self.needed,
        )
        cpu_short = read.cpu_congested or read.starved
        binding = self._contended or self._peak >= self.limit.value
        rate = self._completions / elapsed
        probing = self._probe.step(now, read.queueing, self.need, self.limit)
        need = self.need = self.needed.needed(
            elapsed, learning=probing or not (cpu_short or read.queueing)
        )
        floor = 0
        if read.pool_line and self._pool_size:
            # Below the pool's size the pool idles while requests wait here.
            floor = self._pool_size()
        self.limit.update(
            congested=read.pool_line,
            binding=binding,
            peak_in_flight=self._peak,
            piling_up=read.piling,
            floor=floor,
            # A saturated CPU serves no more for more in flight: 1.5 times what
            # the current mix needs (needed.py) when new work piles up (twice
            # when the wait is out of the loop's sight and its CPU is not
            # short), three times when retries at once do, never less.
            cap=(
                self._probe.cap
                if probing
                else self._cpu_cap(
                    need,
                    read.new_work_piling,
                    out_of_sight=read.queueing and not cpu_short,
                )
                if need
                and (
                    (read.cpu_congested and (read.piling or read.slowed))
                    or read.starved
                    or read.queueing
                )
                else None
            ),
        )
        # CoDel's drop state: entered when a wait ran out (the line grew past
        # what the timeout allows), left once the line has emptied, unless new
        # requests still arrive faster than requests complete. Not on the
        # shortest wait, as CoDel's own rule: served newest first (adaptive
        # LIFO), someone always gets in at once. Not the line alone: with
        # waits cut to the target it empties within milliseconds under an
        # open model at 3x, the mode flapped, and each time off let waits run
        # to the full timeout (W2: the refusals' p99 100 ms). Not refusals
        # alone either: a closed loop's refusals come back as retries and
        # held the mode themselves (W2 2x100 under wrk: 132-656 refusals,
        # 0.75x the 2xx/s of admission off). Retries at once are not new
        # work; a closed loop's new requests follow its answers, an open
        # model's do not. A line that stands but is served in time is not
        # overload: it never enters the mode.
        self.overloaded = self._timeouts_now or (
            self.overloaded and (not self._emptied or read.new_work_piling)
        )
        # How fast slots free is measured while slots are in use: an idle
        # interval would decay the rate towards 0, and the first burst after
        # it would be refused on an expected wait of seconds.
        if self._peak:
            self.completion_rate = (
                rate
                if not self.completion_rate
                else (0.7 * self.completion_rate + 0.3 * rate)
            )
        self._top_held = max(self.held.values(), default=0)
        # A storm: most refusals of two intervals running were answered by
        # the next request on their connection at once (refusal_budget.py).
        at_once = self._retries_now * 2 >= self._refused_count >= STORM_MIN_REFUSALS
        self.budget.adapt(storm=at_once and self._storm_before)
        self._storm_before = at_once
        self.verdict = Verdict(
            read.busy,
            read.pool_wait_s,
            cpu_short or read.queueing or read.pool_line,
            binding,
        )
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
        self._timeouts_now = False
        self._emptied = not self.queued
        self._refused_count = 0
        self._retries_now = 0
        self._completions = 0
        self._arrivals = 0

    def _take_slot(self, client: str) -> None:
        self.in_flight += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight
        held = self.held[client] = self.held[client] + 1
        if held > self._top_held:
            self._top_held = held

    def _cpu_cap(self, need: float, open_model: bool, *, out_of_sight: bool) -> int:
        # At most halved a tick: the first intervals of a burst complete few
        # of the requests they admitted, and their need reads low. Halved from
        # what ran, not from a limit never reached: a fresh worker's limit of
        # 1000 took four ticks to come down to the 150 it held.
        if not open_model:
            headroom = HEADROOM
        elif out_of_sight:
            headroom = OUT_OF_SIGHT_HEADROOM
        else:
            headroom = OPEN_MODEL_HEADROOM
        ran = min(self.limit.value, max(self._peak, 1))
        return max(math.ceil(headroom * need), ran // 2)

    def _under_share(self, client: str) -> bool:
        """Whether ``client`` holds less than its share while another holds more."""
        limit = self.limit.value
        clients = len(self.held) + (client not in self.held)
        share = max(1, limit // clients)
        if not self.held[client] < share < self._top_held:
            return False
        # Borrowing stops at the limit again, or past it by what the busiest
        # client holds over its share: requests it had admitted before the
        # limit fell run on, and twice the limit alone kept everyone else
        # waiting (make fairness, token storm: 200 of the hog's 1.5 s requests
        # in flight, the limit cut to 51, the victim refused 9 times in the
        # first 1.5 s). Bounded still: a client over its share gets a slot
        # only under the limit, so past it what that client holds only falls.
        return self.in_flight < limit + max(limit, self._top_held - share)

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
        self._refused_count += 1
        self._contended = True
        return Decision(reason)

    def _unqueue(self, waiter: _Waiter) -> None:
        if self._lines[waiter.priority].remove(waiter):
            self.queued -= 1
            if not self.queued:
                self._emptied = True

    def _grant_free_slots(self) -> None:
        while self.in_flight < self.limit.value:
            waiter = self._next_waiter()
            if waiter is None:
                return
            waiter.granted = True
            waiter.event.set()
            self.queued -= 1
            if not self.queued:
                self._emptied = True
            self._take_slot(waiter.client)

    def _next_waiter(self) -> _Waiter | None:
        # Overloaded, the newest waiter goes first (Wangle's adaptive LIFO):
        # it has the most of its deadline left, while the oldest are the ones
        # to refuse; first-come first-served then gave the slots to requests
        # that had already waited longest, and goodput within the SLO fell.
        for priority in QUEUED_PRIORITIES:
            waiter = self._lines[priority].pop(newest=self.overloaded)
            if waiter is not None:
                return waiter
        return None

    def _start_dispenser(self) -> None:
        if self._dispenser is None:
            self._dispenser = gevent.spawn(self._dispense)

    def _dispense(self) -> None:
        """Hand refusal tokens to the waiters past their wait, oldest first."""
        try:
            while self._due:
                waiter = self._due[0]
                if waiter.granted or waiter.refused:
                    self._due.popleft()
                    continue
                if not self.budget.take():
                    gevent.sleep(self.budget.next_in())
                    continue
                self._due.popleft()
                self._unqueue(waiter)
                waiter.refused = waiter.wanted
                waiter.event.set()
        finally:
            self._dispenser = None
