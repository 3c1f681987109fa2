"""How many refusals a worker answers per second: a token bucket.

A refusal is cheap but not free: reading and parsing the request and writing
the canned 503 cost one worker about 100 µs of CPU here (it answers 10,000 a
second at 100 % of its core under wrk, keep-alive). A client that retries at
once turns each refusal into the next request, so a worker that answers
refusals as fast as they arrive spends its core on them: on main before this
budget, one worker under 40 such connections served 0.13x the 2xx/s it served
with admission off (87,000 refusals in 10 s).

Refusals beyond the budget are not answered yet. The request stays in the
wait line, holding a socket and no CPU, until a slot frees (it is served) or
a token comes (it is refused) or its deadline passes: a client that does not
back off is slowed down by its own waiting, as TCP backpressure would, while
a client that does gets its 503 at once.

The rate itself adapts to a storm: refusals still waiting for a token at two
control intervals running while most refusals of the interval were answered
by the next request on the same connection within ``RETRY_AT_ONCE_S`` (wrk
comes back in well under a millisecond; a client that backs off, or an open
model whose next request is a new arrival, does not). Then the rate halves,
each interval, down to ``MIN_SHARE``; otherwise it doubles back. So a storm
costs the admitted requests 1 % of the worker, not 8 %, while an open model
at 3x capacity, whose refusals are new arrivals, keeps the whole budget
(halving on a waiting line alone starved it: 900 requests stood in line for
seconds at twice one worker's capacity).
"""

from collections.abc import Callable

# The share of a worker's time refusals may take. At 8 % the 3x-overload runs
# of `make overload` (W1 one worker: about 2 x 370 refusals/s) are answered at
# once, and a retry-at-once storm costs admitted requests 8 % at most.
REFUSAL_CPU_SHARE = 0.08
# CPU per refusal on this machine (see above); a faster machine refuses more
# cheaply, so the budget errs on the side of fewer refusals.
REFUSAL_COST_S = 100e-6
REFUSALS_PER_S = REFUSAL_CPU_SHARE / REFUSAL_COST_S
# The least the rate falls to under a storm: 1 % of the worker.
MIN_SHARE = 0.01
# A request this soon after a refusal on its connection did not back off at all.
RETRY_AT_ONCE_S = 0.002
# A burst of refusals answered at once: 0.1 s of the budget.
BURST_S = 0.1


class RefusalBudget:
    """Tokens at ``rate`` a second, at most ``rate x burst_s`` saved up."""

    def __init__(
        self,
        clock: Callable[[], float],
        rate: float = REFUSALS_PER_S,
        burst_s: float = BURST_S,
    ) -> None:
        self.base_rate = self.rate = rate
        self.min_rate = rate * MIN_SHARE / REFUSAL_CPU_SHARE
        self.capacity = max(1.0, rate * burst_s)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill(self._clock())
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def next_in(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        self._refill(self._clock())
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def adapt(self, *, storm: bool) -> None:
        """Halve the rate during a ``storm``, else double it back."""
        self._refill(self._clock())
        if storm:
            self.rate = max(self.min_rate, self.rate / 2)
        else:
            self.rate = min(self.base_rate, self.rate * 2)
