"""How many requests a worker needs in flight to keep its throughput: Little's law.

``N = X x R``: a route completing X requests a second that each take R
seconds without queueing needs X x R of them in flight; more adds only
waiting. R is each route's shortest latency and X its completion rate, both
over the last couple of seconds (per 100 ms interval, fan-outs complete in
lumps: a quiet interval read as the rate halved the limit), and the sum over
routes is the concurrency the worker's current mix needs. With the CPU
saturated, the gate caps its limit at ``HEADROOM`` times that.

This is the bandwidth-delay product BBR and Kratos' BBR limiter use
(max delivery rate x min RTT), per route rather than for the whole worker:
one minimum over a mix of a 1 ms route and a 10 s one would starve the slow
one. Unlike a limit lowered step by step on a busy CPU, it cannot fall below
what the work needs when a worker is merely at capacity, or when a
neighbour's load makes the loop look busy: the limit stays at twice the
concurrency that is being served.
"""

from collections import deque

# Twice the need: Poisson arrivals and bursts keep the CPU fed, and a request
# queued behind one service time of others waits at most about R.
HEADROOM = 2.0
# Intervals each route's shortest latency is remembered (2 s at 100 ms).
WINDOW = 20
# Routes tracked; past this, new paths share one entry (paths are the
# server's routes, but a client can send any).
MAX_ROUTES = 256
OTHER = "\x00other"


class _Route:
    __slots__ = ("completions", "shortest", "recent")

    def __init__(self) -> None:
        self.completions = 0
        self.shortest = float("inf")
        # (completions, shortest latency) of each recent interval.
        self.recent: deque[tuple[int, float]] = deque(maxlen=WINDOW)


class NeededConcurrency:
    """Per-route completions and shortest latencies; ``needed()`` per interval."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._intervals: deque[float] = deque(maxlen=WINDOW)

    def completed(self, route: str, seconds: float) -> None:
        """Count one completion of ``route`` that took ``seconds``."""
        entry = self._routes.get(route)
        if entry is None:
            if len(self._routes) >= MAX_ROUTES:
                route = OTHER
            entry = self._routes.setdefault(route, _Route())
        entry.completions += 1
        if seconds < entry.shortest:
            entry.shortest = seconds

    def needed(self, elapsed: float) -> float:
        """Σ rate x shortest latency over the window, the interval just ended
        (``elapsed`` seconds) included; starts the next interval."""
        self._intervals.append(elapsed)
        total = 0.0
        for entry in self._routes.values():
            entry.recent.append((entry.completions, entry.shortest))
            entry.completions = 0
            entry.shortest = float("inf")
            # The route's own history is as long as the window's or shorter
            # (new routes); its rate is over the intervals it has seen.
            seen = list(self._intervals)[-len(entry.recent) :]
            completions = sum(count for count, _ in entry.recent)
            if completions:
                shortest = min(latency for _, latency in entry.recent)
                total += completions / sum(seen) * shortest
        return total
