"""How many requests a worker needs in flight to keep its throughput: Little's law.

``N = X x R``: a route completing X requests a second that each take R
seconds without queueing needs X x R of them in flight; more adds only
waiting. R is each route's shortest latency and X its completion rate, both
over the last couple of seconds (per 100 ms interval, fan-outs complete in
lumps: a quiet interval read as the rate halved the limit), X over the
intervals the route was completing in, and the sum over routes is the
concurrency the worker's current mix needs. With the CPU
saturated while work piles up, or answers slowed to several times their
shortest latency (``inflation``: requests queue somewhere the loop cannot
see) while new work does, or a saturated CPU's answers slowed to several times
their typical latency (``slowdown``), the gate caps its limit at
``OPEN_MODEL_HEADROOM`` or ``HEADROOM`` times that.

The shortest latency is learned only while the CPU is not saturated, and
while it is only a shorter one replaces it: under processor sharing every
request is slowed, even the luckiest, so a minimum taken then includes the
queueing it is meant to leave out, the cap follows the in-flight count up and
nothing is capped (seen: an
open model at twice one worker's W1 capacity answered in 4.6 s at p95). If
the held value is too low (an upstream got slower meanwhile), the cap starves
the CPU, the CPU stops being saturated and the new latency is learned: BBR
drains to re-measure its minimum RTT (ProbeRTT); here the cap does it. Where
the wait is out of the worker (a saturated upstream), a cap does not end it,
so the gate probes: every 10 s it halves the need's worth of slots for 0.3 s
and learns what the answers take then (latency_probe.py).

This is the bandwidth-delay product BBR and Kratos' BBR limiter use
(max delivery rate x min RTT), per route rather than for the whole worker:
one minimum over a mix of a 1 ms route and a 10 s one would starve the slow
one. Unlike a limit lowered step by step on a busy CPU, it cannot fall below
what the work needs when a worker is merely at capacity, or when a
neighbour's load makes the loop look busy: the limit stays at least half
again the concurrency that is being served.
"""

from collections import deque

# The cap binds only while work piles up (congestion.py), so below capacity, where a
# busy CPU's in-flight count floats at the need times the slowdown, 1/(1 -
# utilisation), it is not applied (an open model at 0.8x one worker's W1
# capacity: 0 refusals). Piling up, it sets what an admitted request waits.
# New requests piling up (an open model at 3x): half again the need. Three
# times kept W1's admitted answers at 170 ms p50 and 1 s p99, half the goodput
# within 250 ms lost; 1.5x keeps them near 90 ms (make overload).
OPEN_MODEL_HEADROOM = 1.5
# New requests piling up while the loop has CPU to spare and answers are slowed
# out of its sight (the upstream, or the host's other processes): twice the
# need. Here more in flight does not lengthen the loop's own turns; at 1.5x the
# cap held answers near 1.5 times their shortest latency, below what the same
# workers answered in at their knee. Two W1 workers at 3x their knee (make
# capacity, loops 0.3-0.7 busy, the stub at 0.7 of a core): 88-91 % of the knee
# within 200 ms, against 78-83 % at 1.5x; one CPU-bound worker at 3x keeps 1.5x
# (2x there: p99 300-560 ms, goodput within 250 ms 0.62-0.79x of 1.5x's).
OUT_OF_SIGHT_HEADROOM = 2.0
# Retries at once piling up (a closed loop that ignores Retry-After, whose
# retries the refusal budget holds back): three times. Its clients wait for
# their answers, so latency cannot run away, and a tight cap cost AGG's
# 2 x 400 wrk storm its throughput (1.5x: 0.43-0.86x of admission off in the
# same rounds, 3x: 0.83-0.95x).
HEADROOM = 3.0
# Intervals each route's shortest latency is remembered (2 s at 100 ms).
WINDOW = 20
# Intervals over which ``inflation`` is read (half a second, as piling up).
INFLATION_WINDOW = 5
# Routes tracked; past this, new paths share one entry (paths are the
# server's routes, but a client can send any).
MAX_ROUTES = 256
OTHER = "\x00other"
INF = float("inf")


class _Route:
    __slots__ = (
        "completions",
        "held",
        "learned",
        "recent",
        "seconds",
        "shortest",
        "typical",
    )

    def __init__(self) -> None:
        self.completions = 0
        self.seconds = 0.0
        self.shortest = INF
        # (completions, shortest latency or INF when not learning) of each
        # recent interval; the shortest latency last learned.
        self.recent: deque[tuple[int, float]] = deque(maxlen=WINDOW)
        self.held = INF
        # (completions, seconds they took) of the recent intervals that were
        # learning; their mean, the route's typical unqueued latency.
        self.learned: deque[tuple[int, float]] = deque(maxlen=WINDOW)
        self.typical = INF


class NeededConcurrency:
    """Per-route completions and shortest latencies; ``needed()`` per interval."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._intervals: deque[float] = deque(maxlen=WINDOW)
        # (seconds the completions took, seconds they would take at their
        # routes' shortest latency, at their typical one) of the last
        # INFLATION_WINDOW intervals.
        self._latencies: deque[tuple[float, float, float]] = deque(
            maxlen=INFLATION_WINDOW
        )

    @property
    def inflation(self) -> float:
        """How many times their routes' shortest latency the last half
        second's completions took, on the whole (1.0 when unknown)."""
        return self._took_over(1)

    @property
    def slowdown(self) -> float:
        """How many times their routes' typical latency (the mean while
        learning) the last half second's completions took (1.0 when unknown).
        Unlike ``inflation``, a route whose requests differ (a path whose
        query asks for 10 ms or 5 s) does not read as slowed."""
        return self._took_over(2)

    def _took_over(self, index: int) -> float:
        # Seconds the completions took over the reference at ``index``.
        took = sum(interval[0] for interval in self._latencies)
        reference = sum(interval[index] for interval in self._latencies)
        return took / reference if reference else 1.0

    def completed(self, route: str, seconds: float) -> None:
        """Count one completion of ``route`` that took ``seconds``."""
        entry = self._routes.get(route)
        if entry is None:
            if len(self._routes) >= MAX_ROUTES:
                route = OTHER
            entry = self._routes.setdefault(route, _Route())
        entry.completions += 1
        entry.seconds += seconds
        if seconds < entry.shortest:
            entry.shortest = seconds

    def needed(self, elapsed: float, *, learning: bool = True) -> float:
        """Σ rate x shortest latency over the window, the interval just ended
        (``elapsed`` seconds) included; starts the next interval. Not
        ``learning`` (the CPU saturated): each route's shortest latency is
        the one last learned."""
        self._intervals.append(elapsed)
        total = took = unqueued = typical = 0.0
        for entry in self._routes.values():
            if entry.held < INF and entry.typical < INF:
                took += entry.seconds
                unqueued += entry.completions * entry.held
                typical += entry.completions * entry.typical
            # A route first seen with the CPU saturated (a fresh worker under
            # overload) takes its first interval's mean, its earliest answers,
            # until it is learned: an upper bound, so it can only read too
            # little slowdown, never too much.
            if entry.completions and (learning or entry.typical == INF):
                entry.learned.append((entry.completions, entry.seconds))
                entry.typical = sum(s for _, s in entry.learned) / sum(
                    c for c, _ in entry.learned
                )
            entry.seconds = 0.0
            entry.recent.append(
                (entry.completions, entry.shortest if learning else INF)
            )
            if not learning and entry.shortest < entry.held:
                # A shorter latency under saturation is still an upper bound
                # on the unqueued one: only a longer one is queueing. Held
                # instead, a minimum learned in the first intervals of a
                # burst (the busy fraction is smoothed, so saturation is read
                # a few intervals late) was kept for good: W1 at 3x an open
                # model held 110 ms for its 50 ms, the cap let 180 in flight
                # and admitted answers took 180 ms at p50.
                entry.held = entry.shortest
            entry.completions = 0
            entry.shortest = INF
            # The rate is over the intervals in which the route completed
            # something: counting idle ones read a load that had just started
            # after a pause as a fraction of itself, and the cap fell below
            # it (AGG in make loadtest, 0.87x). Lumpy fan-outs read high
            # instead, which only loosens the cap.
            seen = list(self._intervals)[-len(entry.recent) :]
            busy = [
                elapsed
                for elapsed, (count, _) in zip(seen, entry.recent, strict=True)
                if count
            ]
            completions = sum(count for count, _ in entry.recent)
            learned = min(latency for _, latency in entry.recent)
            if learning and learned < INF:
                entry.held = learned
            if completions and entry.held < INF:
                total += completions / sum(busy) * entry.held
        self._latencies.append((took, unqueued, typical))
        return total
