"""Telling a client that retries at once from one that backs off, on a real
event loop: the refusal budget's storm signal (``came_back_at_once``).

The gate calls a storm when most of an interval's refusals came back at once,
so each case here counts over a run of refusals on one connection, as the
worker sees them, and asks for most (or none) of them."""

import subprocess
import sys
import time

import gevent
import gevent.socket
import pytest

from project.server.admission.loop_busy import LoopBusy
from project.server.admission.refusal_budget import (
    RETRY_AT_ONCE_S,
    came_back_at_once,
)

# The loop's turn on a saturated worker: three greenlets of 10 ms each, each
# woken by a timer once a turn (as IO wakes a worker's greenlets).
TURN_S = 0.03
# Longer than that turn: a client that backs off.
THINK_S = 0.1
# A client in a process of its own (off the loop and its GIL, like wrk): for
# each refusal it reads, waits argv[2] seconds and sends the next request.
CLIENT = """
import os, sys, time
fd, think = int(sys.argv[1]), float(sys.argv[2])
os.set_blocking(fd, True)
while os.read(fd, 64):
    time.sleep(think)
    os.write(fd, b"GET / HTTP/1.1\\\\r\\\\n\\\\r\\\\n")
"""


def spin(seconds: float) -> None:
    """Hold the CPU (and the loop) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def retries_seen(think_s: float, refusals: int, *, loop_busy: bool) -> tuple[int, int]:
    """Refuse ``refusals`` times on one connection, reading the client's next
    request each time as the worker does: how many counted as retries at
    once, and how many the gap alone (the rule before the loop's polls) counted."""
    ours, theirs = gevent.socket.socketpair()
    fd = theirs.fileno()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(fd), str(think_s)], pass_fds=[fd]
    )
    loop = LoopBusy()
    loop.start()
    stop = False

    def hog() -> None:
        while not stop:
            spin(TURN_S / 3)
            gevent.sleep(0.001)

    hogs = [gevent.spawn(hog) for _ in range(3)] if loop_busy else []
    at_once = by_gap = 0
    try:
        gevent.sleep(0.3)  # the client started, the loop watched, the hogs running
        for _ in range(refusals):
            ours.sendall(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
            refused_at, refused_poll = time.perf_counter(), loop.polls
            with gevent.Timeout(10):
                ours.recv(64)
            gap = time.perf_counter() - refused_at
            at_once += came_back_at_once(
                gap,
                loop.polls - refused_poll,
                loop.last_wait_s,
                loop.polled_before - refused_at,
            )
            by_gap += gap < RETRY_AT_ONCE_S
        return at_once, by_gap
    finally:
        stop = True
        gevent.joinall(hogs)
        loop.stop()
        ours.close()
        theirs.close()
        client.wait(timeout=10)


def test_retries_at_once_on_a_saturated_loop_are_seen_though_read_late():
    """The loop's turn puts up to tens of milliseconds between a refusal and
    the read of a retry sent at once: the gap alone misses most of them (the
    rule before), the loop's polls do not."""
    at_once, by_gap = retries_seen(0.0, 20, loop_busy=True)
    assert by_gap < 10
    assert at_once >= 15


def test_retries_at_once_on_an_idle_loop_are_seen():
    """wrk on an idle worker: most polls waited a fraction of a millisecond."""
    assert retries_seen(0.0, 20, loop_busy=False)[0] >= 10


@pytest.mark.parametrize("loop_busy", [False, True], ids=["idle", "saturated"])
def test_a_client_that_backs_off_is_no_storm(loop_busy):
    """Thinking longer than the saturated loop's turn: never at once."""
    assert retries_seen(THINK_S, 5, loop_busy=loop_busy)[0] == 0
