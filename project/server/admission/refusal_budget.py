"""How many refusals a worker answers per second: a token bucket for storms.

A refusal is cheap but not free: reading and scanning the request's head
(``raw_head``) and writing the canned 503 cost one worker about 60 µs of CPU
here, where gunicorn's own worker answering a canned 503 from a bare WSGI
callable costs about 110 (``python -m loadtests.refusal_cost``, medians of 3
rounds; 87 µs while gunicorn parsed every refused request). A client that
retries at once turns each refusal into the next request, so a worker that answers
refusals as fast as they arrive spends its core on them: on main before this
budget, one worker under 40 such connections served 0.13x the 2xx/s it served
with admission off (87,000 refusals in 10 s).

A storm is told apart by what follows a refusal: the next request on the same
connection at once (``came_back_at_once``: wrk comes back in well under a
millisecond; a client that backs off, or an open model whose next request is
a new arrival, does not). While most refusals of two control intervals
running are answered that way, refusals get ``STORM_SHARE`` of the worker;
the rest wait in the line, holding a socket and no CPU, for a slot, a token
or Retry-After (the gate's ``defer_s``), whichever comes first: the storm's
clients are slowed by their own waiting, as TCP backpressure would, to about
one refusal a connection per Retry-After. Otherwise refusals are not
limited: an open model at 3x capacity needs two per completion, at once, and
a fixed budget (8 % of the worker was tried) let W2's refusals wait until
their deadline (15 s) at three times its knee.
"""

from collections.abc import Callable

# CPU per refusal on this machine (see above). The gate takes this much per
# refusal off the busy fraction: at 100 µs, W1 at 3x an open model read its
# saturated CPU as under the 0.85 target, the cap came and went, and admitted
# answers took 190-315 ms at p50 (goodput 208-388/s; at 50 µs: 481-601/s).
REFUSAL_COST_S = 60e-6
# Outside a storm: as many as the worker could answer at all.
REFUSALS_PER_S = 1.0 / REFUSAL_COST_S
# During a storm: 1 % of the worker.
STORM_SHARE = 0.01
# A request this soon after a refusal on its connection did not back off at all:
# wrk comes back within 0.2 ms, a Python client within 0.5 ms; an open model
# reusing pooled connections at 5 ms intervals lands under 1 ms one time in five.
RETRY_AT_ONCE_S = 0.001
# A burst of refusals answered at once: 0.1 s of the rate.
BURST_S = 0.1


def came_back_at_once(
    gap_s: float, polls_since: int, last_wait_s: float, poll_before_s: float
) -> bool:
    """Whether the request read ``gap_s`` after a refusal on its connection is
    its client retrying without backing off.

    The gap alone misses storms where they matter: on a saturated worker a
    greenlet runs only when the loop's turn comes round, up to tens of
    milliseconds after its request arrived, so wrk's retries looked like
    backing off (2 workers x 400 connections of W1: 0.74-0.96x the 2xx/s of
    admission off). The event loop tells when the request was there. The
    arguments: polls of the loop since the refusal (the latest one reported
    the request), how long that poll waited, and the seconds from the refusal
    to the end of the poll before it.

    - The poll waited: the loop was idle until the request came, and the gap
      is the client's own.
    - It did not: the request was there when the loop looked, so it came
      after the previous poll at the earliest. The first poll after the
      refusal, or one whose predecessor ended within ``RETRY_AT_ONCE_S`` of
      it: the client may not have waited at all.
    """
    if gap_s < RETRY_AT_ONCE_S:
        return True
    if last_wait_s >= RETRY_AT_ONCE_S:
        return False
    return polls_since <= 1 or poll_before_s < RETRY_AT_ONCE_S


class RefusalBudget:
    """Tokens at ``rate`` a second, at most ``rate x burst_s`` saved up."""

    def __init__(
        self,
        clock: Callable[[], float],
        rate: float = REFUSALS_PER_S,
        burst_s: float = BURST_S,
    ) -> None:
        self.base_rate = self.rate = rate
        self.storm_rate = rate * STORM_SHARE
        self.burst_s = burst_s
        self.tokens = self.capacity = max(1.0, rate * burst_s)
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

    @property
    def storm(self) -> bool:
        """Whether refusals are at the storm rate now."""
        return self.rate < self.base_rate

    def adapt(self, *, storm: bool) -> None:
        """The storm rate during a ``storm``, else the base rate."""
        self._refill(self._clock())
        self.rate = self.storm_rate if storm else self.base_rate
        self.capacity = max(1.0, self.rate * self.burst_s)
        self.tokens = min(self.tokens, self.capacity)
