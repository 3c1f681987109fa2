"""Shorter event-loop turns while the worker is shedding load.

A request a saturated worker refuses waits for the loop turn under way to
end: the loop reads new requests first in each turn (``read_first``), but a
turn runs every upstream answer that was ready at its poll, then gevent's
queue of woken greenlets for up to ``sys.getswitchinterval()`` (5 ms), before
it polls again. One W1 worker at 3x its capacity ran turns of 10-15 ms (the
answers 6-10 ms of it, the queue up to 5), and its refusals took 12-16 ms at
p99 (``make overload``, goal 10).

While the worker sheds, ``shorten(True)`` cuts gevent's batch to
``SHEDDING_SWITCH_S`` and ``yield_to_loop()`` (called by the outbound client
as an upstream's answer arrives) moves the rest of that answer's work from the
turn's IO phase to the queue, where the batch bounds it. Measured alone each
does little (the batch: 9.2-12.0 ms at p99; the answers moved at a 2 ms
batch: 8.2-12.5 ms); together, at a 1 ms batch, refusals' p99 was 8.8 / 9.3 /
8.9 ms and goodput 0.98-1.08x capacity, where the same tree without them gave
12.1-15.5 ms.

The worker yields the same way once it has admitted a request, so the
request's own work (Django, the fan-out's start) leaves the IO phase too: one
W1 worker at 3x, three alternating pairs (a throwaway probe), refusals' p50
2.0-2.2 ms against 3.0-3.3 and p99 6.3 / 7.1 / 9.0 against 10.0 / 8.6 / 9.7
ms, goodput the same (602-670 against 634-652 req/s). Not in a storm of
retries at once, whose refusals wait for the refusal budget's tokens anyway
(AGG under wrk: 0.96-0.99 of admission off with the yield, 0.98-1.00
without).

Not while the worker is not shedding: a 1 ms batch means more loop turns,
each a poll and the loop's watchers, and a yield is two greenlet switches,
for nothing when nobody is refused.

Imports nothing of the project: the server's admission control switches it,
the toolkit's outbound client and the server's worker consult it.
"""

import sys

import gevent

# gevent's callback batch outside shedding: the interpreter's default (5 ms).
DEFAULT_SWITCH_S = sys.getswitchinterval()
# While shedding (measured above).
SHEDDING_SWITCH_S = 0.001

_short = False


def shorten(on: bool) -> None:
    """Short turns on (the worker is shedding) or off (back to the default)."""
    global _short
    if on != _short:
        _short = on
        sys.setswitchinterval(SHEDDING_SWITCH_S if on else DEFAULT_SWITCH_S)


def short() -> bool:
    """Whether turns are short now."""
    return _short


def yield_to_loop() -> None:
    """Let the loop poll before the calling greenlet goes on, while turns are
    short: its work then runs in gevent's bounded batch, not in the turn's IO
    phase (call it right after an IO wake-up)."""
    if _short:
        gevent.sleep(0)
