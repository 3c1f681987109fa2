"""The status of a fan-out leg or an aggregation source, as written in JSON."""

from enum import StrEnum


class Status(StrEnum):
    """What became of one leg or source; a ``str``, so it serialises as its value."""

    OK = "ok"
    # The upstream or query failed; ``error`` says why.
    ERROR = "error"
    # No complete answer within its timeout or the deadline.
    TIMEOUT = "timeout"
    # Not called: the upstream's circuit breaker is open.
    CIRCUIT_OPEN = "circuit_open"
    # Not called: the upstream's bulkhead was full (or this worker had no socket).
    SHED = "shed"
    # The live call failed; an older cached value is served instead.
    STALE = "stale"
    # Not called: it needs a parameter the request did not give.
    SKIPPED = "skipped"
