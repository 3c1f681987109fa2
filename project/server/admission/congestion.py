"""What one control interval says about congestion: the gate's signals.

The gate (``gate.py``) counts what each interval saw (arrivals, retries at
once, completions, refusals); ``Congestion.read`` turns those counts, the
event loop's busy fraction (``loop_busy``), the database pool's line and
the routes' latencies (``needed``) into the verdicts the gate acts on: the
CPU congested or starved, requests queueing out of the loop's sight, the
pool's line backed up, and work piling up, the only case any of them calls
for a cap. The readings carry from one interval to the next (smoothed busy
fractions, the pool line's growth, the last half second's flow), so they
live here, apart from the gate's lines and slots.
"""

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .needed import NeededConcurrency
from .refusal_budget import REFUSAL_COST_S

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
# Queueing out of the loop's sight: new work piling up while completions take
# this many times their routes' shortest latency. Two W1 workers at 3x their
# knee, the stub upstream saturated on the same cores: 366 and 596 in flight
# against a need of 37 and 42 within half a second, the loops 80 % busy, so no
# CPU rule fired; every answer took 2 s and goodput was 4 req/s. Latency, not
# in-flight over need (the same by Little's law once steady): a burst of
# arrivals the worker serves at once has not completed yet. Three times, not
# the cap's 1.5: below capacity a busy worker's answers are slowed too.
QUEUEING = 3.0


def piling_up(flow: list[tuple[int, int]]) -> bool:
    """Whether arrivals outnumber completions by ``PILING_UP`` over the
    intervals of ``flow`` (arrived, served), the one with the most arrivals
    left out, of those the one that served least (a single interval: never).

    The interval left out is a burst of new clients, whose requests arrive
    before any of them is served. A tie on arrivals went to the interval that
    served most: two W1 workers under wrk (2 x 100, fresh workers) read
    (51, 0), (11, 11), (46, 46), (51, 51), (32, 32) as piling for half a
    second, the burst kept and a steady interval left out. Not the largest
    surplus of arrivals over completions instead: it leaves out an open
    model's most lumpy interval, and one W1 worker at 3x kept 696 against 709
    req/s within 250 ms, its admitted p99 higher in 6 of 8 alternating pairs.
    """
    if len(flow) < 2:
        return False
    burst = max(flow, key=lambda interval: (interval[0], -interval[1]))
    arrived = sum(a for a, _ in flow) - burst[0]
    served = sum(c for _, c in flow) - burst[1]
    return arrived > PILING_UP * max(served, 1)


class Interval(NamedTuple):
    """What the gate counted in one control interval."""

    elapsed: float
    arrivals: int
    retries: int  # requests that came right after a refusal on their connection
    completions: int
    refusals: int


class Reading(NamedTuple):
    """One interval's congestion verdicts (``Congestion.read`` says each)."""

    busy: float
    pool_wait_s: float
    cpu_congested: bool
    starved: bool
    queueing: bool
    pool_line: bool
    piling: bool
    new_work_piling: bool
    slowed: bool


class Congestion:
    """The gate's congestion signals, read once per control interval."""

    def __init__(
        self,
        *,
        cpu_target: float,
        pool_wait_target_s: float,
        queue_timeout_s: float,
        cpu: Callable[[], float] | None = None,
        cpu_or_waiting: Callable[[], float] | None = None,
        pool_wait: Callable[[], float] | None = None,
    ) -> None:
        self._cpu_target = cpu_target
        self._pool_wait_target_s = pool_wait_target_s
        self._queue_timeout_s = queue_timeout_s
        self._cpu = cpu
        self._cpu_or_waiting = cpu_or_waiting
        self._pool_wait = pool_wait
        self.busy = 0.0
        self.busy_or_waiting = 0.0
        # No interval has been read yet (the CPU average's start).
        self._fresh = True
        self._pool_growing_before = False
        self._pool_wait_before = 0.0
        # Queueing out of sight (QUEUEING) holds while new work piles up.
        self.queueing = False
        # (arrivals, retries at once, completions) of the last intervals: is
        # work piling up?
        self._flow: deque[tuple[int, int, int]] = deque(maxlen=FLOW_WINDOW)

    def read(self, interval: Interval, needed: NeededConcurrency) -> Reading:
        """The verdicts of the interval just ended."""
        # The refusals' own CPU is not congestion of the admitted work: counted,
        # a storm of refusals would keep the limit down and feed itself.
        refusing = interval.refusals * REFUSAL_COST_S / interval.elapsed
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
        growing = pool_wait >= self._pool_wait_target_s and (
            pool_wait > POOL_GROWTH * self._pool_wait_before
        )
        pool_backed_up = (growing and self._pool_growing_before) or (
            pool_wait >= self._queue_timeout_s and self._pool_wait_before > 0
        )
        self._pool_growing_before = growing
        self._pool_wait_before = pool_wait
        cpu_congested = busy >= self._cpu_target
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
        self._flow.append((interval.arrivals, interval.retries, interval.completions))
        retried = sum(r for _, r, _ in self._flow)
        piling = piling_up([(a, c) for a, _, c in self._flow])
        new_work = [(a - r, c) for a, r, c in self._flow]
        new_work_piling = sum(a for a, _ in new_work) >= MIN_NEW_WORK and piling_up(
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
        starved = new_work_piling and self.busy_or_waiting >= self._cpu_target
        # Queueing out of sight: new work piles up and answers take several
        # times their shortest latency, so requests wait somewhere the loop does
        # not (an upstream the host starves, a neighbour holding the CPU). The
        # shortest latencies are held while it lasts (learned then, they would
        # include the wait) and relearned by probes (latency_probe.py).
        queueing = self.queueing = new_work_piling and (
            self.queueing or needed.inflation >= QUEUEING
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
        slowed = not retried and needed.slowdown >= QUEUEING
        return Reading(
            busy=busy,
            pool_wait_s=pool_wait,
            cpu_congested=cpu_congested,
            starved=starved,
            queueing=queueing,
            pool_line=pool_line,
            piling=piling,
            new_work_piling=new_work_piling,
            slowed=slowed,
        )
