"""Dividing one worker's slots (per upstream, and its fan-out legs) among clients.

Two shapes, for the two places a client could otherwise take everything:

- ``ClientShares`` (the bulkhead's slots; non-blocking): a client alone may
  hold all but a reserve; with others holding slots, each is sure of an equal
  share, and takes more only while more than the reserve is free. So whoever
  comes next always finds a slot, and one client's slow calls cannot fill the
  bulkhead for everyone.
- ``ClassSlots`` (an outbound pool's connections, and the worker's fan-out
  legs; callers wait): critical waiters are served before normal ones,
  normal before sheddable, and sheddable callers never hold the reserve;
  within a class the waiting clients take turns. So a critical call never
  queues behind a flood of sheddable legs, and one client's thousand waiters
  do not stand before another client's one.

Both keep plain counters changed between yields to the gevent hub (no locks),
and hold per-client entries only while the client holds or awaits a slot.
"""

from collections import OrderedDict, deque

from gevent.event import Event

from .caller import TRAFFIC_CLASSES, Caller, TrafficClass

# The share of the slots kept for clients below their fair share (and, in an
# outbound pool, for better classes than sheddable): a quarter lets a client
# alone use three quarters of an upstream, and leaves the next client room at
# once.
RESERVE_SHARE = 4


def reserve_of(limit: int) -> int:
    """The slots of ``limit`` kept in reserve (none below four slots)."""
    return limit // RESERVE_SHARE


class ClientShares:
    """Up to ``limit`` slots, shared so that no client can take them all.

    A slot is refused when none is free; or when the client already holds
    its fair share (``(limit - reserve) / clients holding slots``, counting
    itself) and no more than the reserve is free. Alone, a client holds at
    most ``limit - reserve``; a newcomer is below its share and may take from
    the reserve, while clients over their share can only drain to it.
    """

    def __init__(self, limit: int, reserve: int | None = None) -> None:
        self.limit = limit
        self.reserve = reserve_of(limit) if reserve is None else reserve
        self.in_use = 0
        self.held: dict[str, int] = {}

    def fair_share(self, client: str) -> int:
        """The slots ``client`` may hold even from the reserve, given who holds now."""
        clients = len(self.held) + (client not in self.held)
        return max(1, (self.limit - self.reserve) // clients)

    def try_take(self, client: str) -> bool:
        """Take a slot for ``client`` and return True, or return False."""
        free = self.limit - self.in_use
        if free <= 0:
            return False
        if self.held.get(client, 0) >= self.fair_share(client) and free <= self.reserve:
            return False
        self.held[client] = self.held.get(client, 0) + 1
        self.in_use += 1
        return True

    def give_back(self, client: str) -> None:
        """Return a slot ``client`` took."""
        self.in_use -= 1
        left = self.held[client] - 1
        if left:
            self.held[client] = left
        else:
            del self.held[client]


class _Waiter:
    """One caller waiting for a slot; ``granted`` once a slot is its own."""

    __slots__ = ("cancelled", "event", "granted")

    def __init__(self) -> None:
        self.event = Event()
        self.granted = False
        self.cancelled = False


class ClassSlots:
    """``size`` slots handed out by traffic class, then client by client.

    A caller takes a free slot at once unless callers of its class or a
    better one are waiting (then it queues, so nobody jumps the line). A
    freed slot goes to the best class with a live waiter; within the class,
    to the next client in turn (round-robin), and to that client's oldest
    waiter. Sheddable callers hold at most ``size - reserve`` slots, so
    critical and normal calls find one free even when sheddable ones would
    fill the rest. A waiter interrupted (its call's timeout, a kill) leaves
    the queue, and gives on a slot granted to it in the meantime.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self.caps = {
            traffic_class: size
            if traffic_class != "sheddable"
            else max(1, size - reserve_of(size))
            for traffic_class in TRAFFIC_CLASSES
        }
        self.held = dict.fromkeys(TRAFFIC_CLASSES, 0)
        # Per class: client -> its waiters, oldest first; the order of the
        # clients is their turn. Cancelled waiters are dropped when reached.
        self._queues: dict[TrafficClass, OrderedDict[str, deque[_Waiter]]] = {
            traffic_class: OrderedDict() for traffic_class in TRAFFIC_CLASSES
        }
        self._waiting = dict.fromkeys(TRAFFIC_CLASSES, 0)

    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return sum(self._waiting.values())

    def try_acquire(self, caller: Caller) -> bool:
        """Take a slot for ``caller`` if one is free to it now, without waiting."""
        traffic_class = caller.traffic_class
        if self._may_take(traffic_class) and not self._queued_ahead(traffic_class):
            self._grant(traffic_class)
            return True
        return False

    def acquire(self, caller: Caller) -> None:
        """Take a slot for ``caller``, waiting as long as it takes.

        Bound the wait from outside (the call's ``gevent.Timeout``).
        """
        if self.try_acquire(caller):
            return
        traffic_class = caller.traffic_class
        waiter = _Waiter()
        queue = self._queues[traffic_class]
        queue.setdefault(caller.client, deque()).append(waiter)
        self._waiting[traffic_class] += 1
        try:
            waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(caller)
            else:
                waiter.cancelled = True
                self._waiting[traffic_class] -= 1
                if not self._waiting[traffic_class]:
                    queue.clear()  # only cancelled waiters are left in it
            raise

    def release(self, caller: Caller) -> None:
        """Give back a slot ``caller`` holds; hand it to the next waiter in turn."""
        self.in_use -= 1
        self.held[caller.traffic_class] -= 1
        self._hand_on()

    def _may_take(self, traffic_class: TrafficClass) -> bool:
        return (
            self.in_use < self.size
            and self.held[traffic_class] < self.caps[traffic_class]
        )

    def _queued_ahead(self, traffic_class: TrafficClass) -> bool:
        for other in TRAFFIC_CLASSES:
            if self._waiting[other]:
                return True
            if other == traffic_class:
                return False
        return False

    def _grant(self, traffic_class: TrafficClass) -> None:
        self.in_use += 1
        self.held[traffic_class] += 1

    def _hand_on(self) -> None:
        """Grant free slots to waiters: best class first, clients in turn."""
        for traffic_class in TRAFFIC_CLASSES:
            queue = self._queues[traffic_class]
            while self._waiting[traffic_class] and self._may_take(traffic_class):
                client, waiters = next(iter(queue.items()))
                waiter = waiters.popleft()
                if waiters:
                    queue.move_to_end(client)
                else:
                    del queue[client]
                if waiter.cancelled:
                    continue
                self._waiting[traffic_class] -= 1
                self._grant(traffic_class)
                waiter.granted = True
                waiter.event.set()
            if self.in_use >= self.size:
                return
