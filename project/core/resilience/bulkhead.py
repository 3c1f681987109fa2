"""A bulkhead: at most ``limit`` concurrent calls to one upstream; excess is shed."""

from dataclasses import dataclass

from ..upstream_metrics import upstream_meter


@dataclass(frozen=True)
class BulkheadConfig:
    """How many calls to one upstream may be in flight at once."""

    limit: int = 100


class Bulkhead:
    """Non-blocking: a call that finds every slot taken is refused at once.

    Waiting would only move the queue from the upstream into this worker and
    spend the caller's deadline; shedding answers straight away (``shed``).
    """

    def __init__(self, config: BulkheadConfig, *, name: str | None = None) -> None:
        self.limit = config.limit
        self.in_use = 0
        self.shed = 0
        # ``name`` (the upstream's) exports the slots in use and the calls shed.
        self.name = name
        self.meter = upstream_meter(name)

    def try_acquire(self) -> bool:
        """Take a slot and return True, or count a shed call and return False."""
        if self.in_use >= self.limit:
            self.shed += 1
            return False
        self.in_use += 1
        if self.meter is not None:
            self.meter.in_use.inc()
        return True

    def release(self) -> None:
        """Give back a slot taken by ``try_acquire``."""
        self.in_use -= 1
        if self.meter is not None:
            self.meter.in_use.dec()
