"""A bulkhead: at most ``limit`` concurrent calls to one upstream, shared out
among clients; excess is shed."""

from dataclasses import dataclass

from ..fair_share import ClientShares
from ..upstream_metrics import upstream_meter


@dataclass(frozen=True)
class BulkheadConfig:
    """How many calls to one upstream may be in flight at once."""

    limit: int = 100


class Bulkhead:
    """Non-blocking: a call that finds no slot for its client is refused at once.

    Waiting would only move the queue from the upstream into this worker and
    spend the caller's deadline; shedding answers straight away (``shed``).

    Slots are shared out by client (``fair_share.ClientShares``): one bearer
    token's 200 concurrent slow aggregations used to take every slot, and
    every other client's calls to that upstream were shed. Now a client
    alone may hold three quarters of the slots (a demanding user still gets
    most of the upstream when nobody else wants it); when others hold slots
    too, each is sure of an equal share of those three quarters, and the last
    quarter is kept for clients below their share, so whoever comes next gets
    a slot at once and the heavy client drains to its share as its calls end.
    """

    def __init__(self, config: BulkheadConfig, *, name: str | None = None) -> None:
        self.limit = config.limit
        self.shares = ClientShares(config.limit)
        self.shed = 0
        # ``name`` (the upstream's) exports the slots in use and the calls shed.
        self.name = name
        self.meter = upstream_meter(name)

    @property
    def in_use(self) -> int:
        """Slots taken now, by every client."""
        return self.shares.in_use

    def try_acquire(self, client: str) -> bool:
        """Take a slot for ``client`` and return True, or count a shed call and
        return False."""
        if not self.shares.try_take(client):
            self.shed += 1
            return False
        if self.meter is not None:
            self.meter.in_use.inc()
        return True

    def release(self, client: str) -> None:
        """Give back a slot ``client`` took with ``try_acquire``."""
        self.shares.give_back(client)
        if self.meter is not None:
            self.meter.in_use.dec()
