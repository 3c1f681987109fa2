"""A circuit breaker that never holds a lock across the call, and counts timeouts.

pybreaker holds a lock for the duration of the protected call, which under
gevent serialises every caller of an upstream. Here the call happens outside
the breaker: ``allow()`` admits it and returns a ticket, ``record()`` reports
how it went. Both only touch plain attributes without yielding to the hub, so
greenlets cannot interleave inside them and no lock is needed at all.

The caller must report every outcome, including ``gevent.Timeout`` (a
``BaseException`` that ``except Exception`` misses): a timeout is a failure
and a slow call.

States: closed (calls flow; the last ``window`` outcomes are kept) → open when,
with at least ``min_calls`` in the window, the failure rate or the slow-call
rate reaches its threshold → after ``open_ms`` half-open: up to
``half_open_probes`` probes are let through; as many successes close the
breaker, any failure opens it again.

An upstream's calls are made for many clients, and a client chooses much of
what its calls cost (a slow report, a huge page, parameters the upstream
rejects). ``UpstreamBreaker`` is what the guards use: each client has a
breaker of its own, and the upstream's shared one opens only on evidence
from more than one client (``spare_worst_client``). So one client's slow or
failing calls stop that client only; before, one bearer token's 200
deliberately slow aggregations opened the upstream's breaker for everyone.
"""

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from ..upstream_metrics import upstream_meter

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """When a breaker opens, and for how long (see the module docstring)."""

    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_ms: int = 1000
    window: int = 20
    # At most ``window``: the rates are judged over that many calls.
    min_calls: int = 10
    open_ms: int = 5000
    half_open_probes: int = 1


class CircuitBreaker:
    """Failure-rate and slow-call-rate breaker over a count-based window.

    ``spare_worst_client``: the rates must reach their thresholds (over at
    least ``min_calls``) among the window's calls of every client but the
    one with the most failed or slow calls, so no single client can open it.
    """

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        spare_worst_client: bool = False,
    ) -> None:
        self.config = config
        self.spare_worst_client = spare_worst_client
        self.clock = clock
        self.state = CLOSED
        # ``name`` (the upstream's) exports the state and its transitions.
        self.name = name
        self.meter = upstream_meter(name)
        if self.meter is not None:
            self.meter.breaker_made()
        # Bumped on every state change: outcomes of calls admitted under an
        # earlier state are ignored (a slow call from before the trip must not
        # close or reopen the breaker).
        self.generation = 0
        self.opened_at = 0.0
        # (client, failed, slow) of the latest calls.
        self.window: deque[tuple[str, bool, bool]] = deque(maxlen=config.window)
        self.failures = 0
        self.slow = 0
        self.probes = 0
        self.probe_successes = 0
        self.rejected = 0

    def allow(self) -> int | None:
        """Admit a call: return a ticket for ``record``, or None if it must not run."""
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.config.open_ms / 1000.0:
                self.rejected += 1
                return None
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self.probes >= self.config.half_open_probes:
                self.rejected += 1
                return None
            self.probes += 1
        return self.generation

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 if not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.config.open_ms / 1000.0 - self.clock())

    def record(
        self, ticket: int, *, ok: bool, seconds: float, client: str = ""
    ) -> None:
        """Report an admitted call's outcome (``ok`` False for errors and timeouts),
        made for ``client``."""
        if ticket != self.generation:
            return
        slow = seconds * 1000.0 >= self.config.slow_call_ms
        if self.state == HALF_OPEN:
            self.probes -= 1
            if not ok or slow:
                self._move(OPEN)
                return
            self.probe_successes += 1
            if self.probe_successes >= self.config.half_open_probes:
                self._move(CLOSED)
            return
        if len(self.window) == self.window.maxlen:
            _, old_failed, old_slow = self.window[0]
            self.failures -= old_failed
            self.slow -= old_slow
        self.window.append((client, not ok, slow))
        self.failures += not ok
        self.slow += slow
        if self._over(len(self.window), self.failures, self.slow) and (
            not self.spare_worst_client or self._over_without_worst_client()
        ):
            self._move(OPEN)

    def _over(self, calls: int, failures: int, slow: int) -> bool:
        """Whether these counts reach a threshold."""
        return calls >= self.config.min_calls and (
            failures / calls >= self.config.failure_rate
            or slow / calls >= self.config.slow_call_rate
        )

    def _over_without_worst_client(self) -> bool:
        """Whether the window reaches a threshold without its worst client's calls.

        Only reached once the whole window does, so the walk is rare.
        """
        bad: dict[str, int] = {}
        for client, failed, slow in self.window:
            if failed or slow:
                bad[client] = bad.get(client, 0) + 1
        worst = max(bad, key=bad.__getitem__, default=None)
        rest = [entry for entry in self.window if entry[0] != worst]
        return self._over(
            len(rest),
            sum(failed for _, failed, _ in rest),
            sum(slow for _, _, slow in rest),
        )

    def abandon(self, ticket: int) -> None:
        """The admitted call was killed from outside: no verdict on the upstream."""
        if ticket == self.generation and self.state == HALF_OPEN:
            self.probes -= 1

    def _move(self, state: str) -> None:
        self.state = state
        if self.meter is not None:
            self.meter.breaker_moved(state)
        self.generation += 1
        self.probes = 0
        self.probe_successes = 0
        if state == OPEN:
            self.opened_at = self.clock()
        if state == CLOSED:
            self.window.clear()
            self.failures = self.slow = 0


# Clients whose own breakers are kept per upstream and worker; the least
# recently seen is forgotten first (it starts afresh when it comes back).
MAX_CLIENT_BREAKERS = 1024


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted call: its client, and the generations it was admitted under."""

    client: str
    own: int
    shared: int


class UpstreamBreaker:
    """An upstream's breakers: one per client, and one shared that no single
    client can open.

    A call must pass both. Its outcome goes to its client's breaker, which
    opens on that client's calls alone, and to the shared breaker, which
    opens only when the thresholds are reached among the other clients'
    calls too (``CircuitBreaker.spare_worst_client``). So a client whose
    calls fail or are slow (perhaps by its own choice) is stopped by its own
    breaker; an upstream that fails everyone is cut off for everyone, and a
    newcomer need not find that out on its own calls. With a single client
    only its own breaker ever opens, which stops exactly that client.

    Timeouts count as failures, as in ``CircuitBreaker``. Not defended: one
    party that presents as many clients (many tokens or addresses).
    """

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        # Only the shared breaker is exported: client keys are not labels.
        self.shared = CircuitBreaker(
            config, clock=clock, name=name, spare_worst_client=True
        )
        self.clients: OrderedDict[str, CircuitBreaker] = OrderedDict()

    @property
    def state(self) -> str:
        """The shared breaker's state (closed, open or half_open)."""
        return self.shared.state

    def state_for(self, client: str) -> str:
        """``client``'s own breaker's state (closed if it has none)."""
        own = self.clients.get(client)
        return CLOSED if own is None else own.state

    def allow(self, client: str) -> Ticket | None:
        """Admit a call for ``client``: a ticket for ``record``, or None."""
        own = self._own(client)
        own_ticket = own.allow()
        if own_ticket is None:
            return None
        shared_ticket = self.shared.allow()
        if shared_ticket is None:
            own.abandon(own_ticket)
            return None
        return Ticket(client, own_ticket, shared_ticket)

    def retry_after(self, client: str) -> float:
        """Seconds until the breaker refusing ``client`` lets a probe through."""
        own = self.clients.get(client)
        mine = 0.0 if own is None else own.retry_after()
        return max(mine, self.shared.retry_after())

    def record(self, ticket: Ticket, *, ok: bool, seconds: float) -> None:
        """Report an admitted call's outcome to its client's and the shared breaker."""
        own = self.clients.get(ticket.client)
        if own is not None:
            own.record(ticket.own, ok=ok, seconds=seconds)
        self.shared.record(ticket.shared, ok=ok, seconds=seconds, client=ticket.client)

    def abandon(self, ticket: Ticket) -> None:
        """The admitted call was killed from outside: no verdict on the upstream."""
        own = self.clients.get(ticket.client)
        if own is not None:
            own.abandon(ticket.own)
        self.shared.abandon(ticket.shared)

    def _own(self, client: str) -> CircuitBreaker:
        own = self.clients.get(client)
        if own is None:
            own = self.clients[client] = CircuitBreaker(self.config, clock=self.clock)
            if len(self.clients) > MAX_CLIENT_BREAKERS:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(client)
        return own
