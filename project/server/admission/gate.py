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
cannot keep every other client waiting for a slot; the borrowing is bounded
by the limit itself (at most twice the limit runs).

The queue timeout follows CoDel as Facebook's servers use it (Wangle's
"adaptive LIFO + CoDel"): while the worker is not overloaded a burst may wait
up to ``queue_timeout_s``; once it is (a wait ran out), waits are capped at
``queue_target_s``, sheddable requests do not wait at all and the newest
waiter is served first, until the line has emptied and new requests (not
retries at once) no longer arrive faster than requests complete: a growing
line cannot form and admitted requests keep their latency.

The limit itself (``limit.py``) moves once per ``interval_s`` on two
congestion signals measured inside the worker, not inferred from latency: the
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

from .fair_line import FairLine
from .latency_probe import LatencyProbe
from .limit import AdaptiveLimit, LimitConfig
from .needed import (
    HEADROOM,
    OPEN_MODEL_HEADROOM,
    OUT_OF_SIGHT_HEADROOM,
    NeededConcurrency,
)
from .refusal_budget import REFUSAL_COST_S, RefusalBudget

LIMIT = "limit"
QUEUE = "queue"
DEADLINE = "deadline"
# Not answered at all: the client left while its request waited for a slot.
CLIENT_GONE = "client_gone"

QUEUED_PRIORITIES = (Priority.CRITICAL, Priority.NORMAL, Priority.SHEDDABLE)
# Weight of the newest interval in the smoothed busy fraction (about 0.3 s).
CPU_SMOOTHING = 0.3
# A pool line "grows" when its oldest wait is this much longer than a tick ago.
POOL_GROWTH = 1.2
# Arrivals past this multiple of completions over FLOW_WINDOW intervals (half a
# second) mean work piling up, the only case the CPU cap is for.
PILING_UP = 1.2
FLOW_WINDOW = 5
# Fewer new requests than this over FLOW_WINDOW do not hold CoDel mode, however
# few complete: a handful is no open model outpacing the worker.
MIN_NEW_WORK = 10
# Fewer refusals than this in an interval are no storm, whatever follows them.
STORM_MIN_REFUSALS = 10
# Fair-share borrowing stops at this multiple of the limit in flight.
BORROW_CEILING = 2
# Queueing out of the loop's sight: new work piling up while completions take
# this many times their routes' shortest latency. Two W1 workers at 3x their
# knee, the stub upstream saturated on the same cores: 366 and 596 in flight
# against a need of 37 and 42 within half a second, the loops 80 % busy, so no
# CPU rule fired; every answer took 2 s and goodput was 4 req/s. Latency, not
# in-flight over need (the same by Little's law once steady): a burst of
# arrivals the worker serves at once has not completed yet. Three times, not
# the cap's 1.5: below capacity a busy worker's answers are slowed too.
QUEUEING = 3.0


def _piling_up(flow: list[tuple[int, int]]) -> bool:
    """Whether arrivals outnumber completions by ``PILING_UP`` over the
    intervals of ``flow`` (arrived, served), the one with the most arrivals
    left out (a single interval: never)."""
    if len(flow) < 2:
        return False
    burst = max(flow)
    arrived = sum(a for a, _ in flow) - burst[0]
    served = sum(c for _, c in flow) - burst[1]
    return arrived > PILING_UP * max(served, 1)


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
        self._cpu = cpu
        self._cpu_or_waiting = cpu_or_waiting
        self._pool_wait = pool_wait
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
        self.busy = 0.0
        self.busy_or_waiting = 0.0
        self.verdict = Verdict()
        self._last_refusal = -math.inf
        self._last_tick = clock()
        self._pool_growing_before = False
        self._pool_wait_before = 0.0
        self._storm_before = False
        # Queueing out of sight (QUEUEING), and its probes.
        self._queueing = False
        self._probe = LatencyProbe()
        # (arrivals, retries at once, completions) of the last intervals: is
        # work piling up?
        self._flow: deque[tuple[int, int, int]] = deque(maxlen=FLOW_WINDOW)
        self._greenlet: gevent.Greenlet | None = None
        # No control interval has ended yet (the CPU average's start).
        self._fresh = True
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
        cfg = self.config
        now = self._clock()
        elapsed = max(now - self._last_tick, 1e-6)
        # The refusals' own CPU is not congestion of the admitted work: counted,
        # a storm of refusals would keep the limit down and feed itself.
        refusing = self._refused_count * REFUSAL_COST_S / elapsed
        cpu = max(0.0, (self._cpu() if self._cpu else 0.0) - refusing)
        # Smoothed: a burst of arrivals that keeps the loop busy for a tick or
        # two (a hundred slow, cheap requests at once) is not congestion. The
        # first reading is the average's start, not a step up from idle: from
        # 0, a fresh worker under 3x its W1 capacity read past the target only
        # at its sixth tick, had taken in 400 requests by then (answered in
        # 0.8 s), and h2load's connections, each that far behind, sent their
        # missed requests at once on each answer: the storm budget took that
        # for retries and held refusals for a second ever after (goodput
        # 0.66-0.77x, refusals' p99 1 s, in 6 runs of 15).
        if self._fresh:
            self.busy = self.busy_or_waiting = cpu
        busy = self.busy = CPU_SMOOTHING * cpu + (1 - CPU_SMOOTHING) * self.busy
        # Read after cpu(): the same interval, its waits for a CPU counted.
        waiting = (
            max(0.0, self._cpu_or_waiting() - refusing) if self._cpu_or_waiting else cpu
        )
        self.busy_or_waiting = (
            CPU_SMOOTHING * waiting + (1 - CPU_SMOOTHING) * self.busy_or_waiting
        )
        self._fresh = False
        pool_wait = self._pool_wait() if self._pool_wait else 0.0
        # The pool's line is backed up when it grows past the target at two
        # ticks running (one slow checkout in a burst is not a queue), or
        # stands longer than a request may wait here.
        growing = pool_wait >= cfg.pool_wait_target_s and (
            pool_wait > POOL_GROWTH * self._pool_wait_before
        )
        pool_backed_up = (growing and self._pool_growing_before) or (
            pool_wait >= cfg.queue_timeout_s and self._pool_wait_before > 0
        )
        self._pool_growing_before = growing
        self._pool_wait_before = pool_wait
        cpu_congested = busy >= cfg.cpu_target
        binding = self._contended or self._peak >= self.limit.value
        rate = self._completions / elapsed
        # Work piling up: more arrived over the last half second than was
        # served, even without its busiest interval. Below capacity a busy
        # CPU's in-flight count floats at the need times the slowdown, 1/(1 -
        # utilisation), and capping it there refused 11 % of an open model at
        # 0.8x one worker's W1 capacity; only arrivals outpacing completions
        # (3x the load, a retry storm) call for the cap. A closed loop never
        # piles up: arrivals follow answers. But its clients arrive in one
        # burst (a fresh worker's first interval, or a few hundred new
        # connections later), which the window reads as piling for half a
        # second while nothing piles after it: a saturated worker's cap cut
        # the limit below its clients (W1 2x100 under wrk on fresh workers:
        # 2,401 refusals while admission off met its SLO; W2, a closed loop
        # of 400 on two workers of 32 connections after one of 100: 3,500
        # refusals in 10 s). An open model's and a storm's arrivals keep
        # coming in every interval. Not the latest intervals alone: an open
        # model's completions come in lumps and many of its arrivals read as
        # retries at once, so a single interval can read either way.
        self._flow.append((self._arrivals, self._retries_now, self._completions))
        retried = sum(r for _, r, _ in self._flow)
        piling = _piling_up([(a, c) for a, _, c in self._flow])
        new_work = [(a - r, c) for a, r, c in self._flow]
        new_work_piling = sum(a for a, _ in new_work) >= MIN_NEW_WORK and _piling_up(
            new_work
        )
        # A backed-up pool line is congestion only while new work piles up. A
        # closed loop of more clients than connections keeps a line as long as
        # its clients make it, however long that is, and it never grows:
        # moved to the gate, it only turned pool waits into refusals and
        # retries (W2, 50 clients on 32 connections: 849 refusals while the
        # run without admission met its SLO; AGG, 225 clients a worker on 32
        # connections, a 440 ms line: the limit cut below the clients every
        # few seconds, 27,000 refusals a run, 0.91x the 2xx/s of admission off).
        pool_line = pool_backed_up and new_work_piling
        # Starved: new work piles up while the worker, counting the time it
        # waited for a CPU the host's other processes held, is past the
        # target. The loop's own reading missed that wait (two W1 workers at
        # 3x their knee, sharing the cores with the stub: 0.63-0.85 busy,
        # nothing refused, goodput 0 % of the knee). Only then: read always,
        # the full host of a wrk storm (a closed loop, whose new requests
        # follow its answers) capped work the worker could still do
        # (W1 2x400: 0.89 / 0.99 of admission off, against 1.22 / 1.17).
        starved = new_work_piling and self.busy_or_waiting >= cfg.cpu_target
        # Queueing out of sight: new work piles up and answers take several
        # times their shortest latency, so requests wait somewhere the loop does
        # not (an upstream the host starves, a neighbour holding the CPU). The
        # shortest latencies are held while it lasts (learned then, they would
        # include the wait) and relearned by probes (latency_probe.py).
        queueing = self._queueing = new_work_piling and (
            self._queueing or self.needed.inflation >= QUEUEING
        )
        # Saturated and answers at 3 times their shortest latency with nothing
        # piling up: a closed loop holding more in flight than the CPU serves in
        # time. h2load's open model turns into one once every connection waits
        # for an answer (one W1 worker at 3x: 400 in flight for a need of 40,
        # answers in 0.9 s, nothing refused, goodput 0.2x); capped at three
        # times the need, its answers keep that. Below capacity answers are not
        # slowed so far (W1 at 0.8x: 1.1-1.4x). Against the typical latency,
        # not the shortest: nothing piling up is no evidence of overload, and
        # a path whose requests ask for 10 ms or 5 s is not slowed by its mix.
        # Not while retries at once come:
        # a storm that piles up is capped already, and one whose refusals are
        # held back would only be refused more (AGG 2x400 under wrk: 28,000
        # refusals where 18,000 were, 0.92x of admission off where 0.95x was).
        slowed = not retried and self.needed.slowdown >= QUEUEING
        probing = self._probe.step(now, queueing, self.need, self.limit)
        need = self.need = self.needed.needed(
            elapsed, learning=probing or not (cpu_congested or starved or queueing)
        )
        floor = 0
        if pool_line and self._pool_size:
            # Below the pool's size the pool idles while requests wait here.
            floor = self._pool_size()
        self.limit.update(
            congested=pool_line,
            binding=binding,
            peak_in_flight=self._peak,
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
                    new_work_piling,
                    out_of_sight=queueing and not (cpu_congested or starved),
                )
                if need
                and ((cpu_congested and (piling or slowed)) or starved or queueing)
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
            self.overloaded and (not self._emptied or new_work_piling)
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
            busy, pool_wait, cpu_congested or starved or queueing or pool_line, binding
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
        if self.in_flight >= BORROW_CEILING * limit:
            return False
        clients = len(self.held) + (client not in self.held)
        share = max(1, limit // clients)
        return self.held[client] < share < self._top_held

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
