"""One upstream's labelled metric children, made once and held by its users.

``http_get``, the socket pools and the resilience pieces (bulkhead, breaker,
retry budget) fill the ``gd_upstream_*`` families through an
``UpstreamMeter``: the ``.labels(...)`` lookups happen once per upstream, so
a call costs only the increments. The ``upstream`` label is a configured
upstream's name, or a pool's origin ``host:port``; both come from the
configuration, never from clients, so the series stay few.

Attempts are the hot path (W1 makes ten per request): each would cost three
writes to the multiprocess files (about 4.5 us together), so ``call`` only
adds to plain counters and ``flush_pending`` writes them once a second (the
socket-counting timer) and before each exposition. A scrape may therefore
see an attempt up to a second late.
"""

from . import metrics
from .metrics import (
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    BULKHEAD_IN_USE,
    UPSTREAM_CALL_DURATION,
    UPSTREAM_CALLS,
    UPSTREAM_CONNECTIONS,
    UPSTREAM_RETRIES,
    PendingCounter,
    PendingHistogram,
    enabled,
)
from .status import Status

# The outcomes of a call (Status values that an upstream call can end in).
CALL_OUTCOMES = (
    Status.OK,
    Status.ERROR,
    Status.TIMEOUT,
    Status.SHED,
    Status.CIRCUIT_OPEN,
)
# The breaker states (resilience.breaker's names) and their gauge values.
BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


class UpstreamMeter:
    """The children of every ``gd_upstream_*`` family for one ``upstream`` label."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls = {
            outcome: PendingCounter(
                UPSTREAM_CALLS.labels(upstream=upstream, outcome=outcome.value)
            )
            for outcome in CALL_OUTCOMES
        }
        self.duration = PendingHistogram(
            UPSTREAM_CALL_DURATION.labels(upstream=upstream)
        )
        self.retried = UPSTREAM_RETRIES.labels(upstream=upstream, decision="retried")
        self.retry_refused = UPSTREAM_RETRIES.labels(
            upstream=upstream, decision="refused"
        )
        self.in_use = BULKHEAD_IN_USE.labels(upstream=upstream)
        self.open_sockets = UPSTREAM_CONNECTIONS.labels(upstream=upstream, state="open")
        self.idle_sockets = UPSTREAM_CONNECTIONS.labels(upstream=upstream, state="idle")
        self._breaker_state = BREAKER_STATE.labels(upstream=upstream)
        self._transitions = {
            state: BREAKER_TRANSITIONS.labels(upstream=upstream, state=state)
            for state in BREAKER_CODES
        }

    def call(self, outcome: Status, seconds: float) -> None:
        """Count one attempt that reached the upstream, and its time."""
        self.calls[outcome].inc()
        self.duration.observe(seconds)

    def flush(self) -> None:
        """Write the attempts counted since the last flush to the metrics."""
        for calls in self.calls.values():
            calls.flush()
        self.duration.flush()

    def breaker_moved(self, state: str) -> None:
        """A breaker entered ``state``."""
        self._breaker_state.set(BREAKER_CODES[state])
        self._transitions[state].inc()

    def breaker_made(self) -> None:
        """A breaker starts closed (a transition only once it changes)."""
        self._breaker_state.set(BREAKER_CODES["closed"])


# Upstream label -> meter, in this process. Bounded: labels are configured.
_meters: dict[str, UpstreamMeter] = {}


def upstream_meter(upstream: str | None) -> UpstreamMeter | None:
    """The meter of ``upstream``; None without a name or with metrics off."""
    if upstream is None or not enabled():
        return None
    meter = _meters.get(upstream)
    if meter is None:
        meter = _meters[upstream] = UpstreamMeter(upstream)
    return meter


def flush_pending() -> None:
    """Write every meter's pending attempts (the timer, an exposition, tests)."""
    for meter in _meters.values():
        meter.flush()


metrics.before_exposition(flush_pending)


def origin_label(host: str, port: int | None, scheme: str) -> str:
    """The ``upstream`` label of an origin without a configured name."""
    return f"{host}:{port or (443 if scheme == 'https' else 80)}"
