"""The event loop's busy fraction."""

import time
from collections.abc import Callable

import gevent

from project.server.admission.loop_busy import LoopBusy


def spin(seconds: float) -> None:
    """Hold the CPU (and the loop) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_nothing_is_known_before_the_first_poll_watched():
    """Started mid-iteration: the first sample reads 0, not the poll it missed."""
    busy = LoopBusy()
    gevent.sleep(0)  # resumed from gevent's callbacks, inside an iteration
    busy.start()
    try:
        gevent.sleep(0)
        assert busy.sample() == 0.0
    finally:
        busy.stop()


def busy_while(*works: Callable[[], None]) -> float:
    """The busy fraction measured while ``works`` run, each in a greenlet."""
    busy = LoopBusy()
    busy.start()
    try:
        gevent.sleep(0.01)  # one whole iteration watched
        busy.sample()
        gevent.joinall([gevent.spawn(work) for work in works])
        return busy.sample()
    finally:
        busy.stop()


def test_an_idle_loop_is_not_busy():
    """Sleeping greenlets leave the loop polling: busy near 0."""
    assert busy_while(lambda: gevent.sleep(0.2)) < 0.2


def test_greenlets_run_from_gevent_callbacks_count_as_busy():
    """Work resumed through gevent's callback queue (spawn, sleep(0)) is busy
    time, not idle: three greenlets taking turns keep the loop near 100 %."""

    def work() -> None:
        for _ in range(50):
            spin(0.002)
            gevent.sleep(0)

    assert busy_while(work, work, work) > 0.8


def test_half_busy_reads_about_half():
    """Alternating 10 ms of work with 10 ms of sleep reads between 0.3 and 0.7."""

    def work() -> None:
        for _ in range(15):
            spin(0.01)
            gevent.sleep(0.01)

    assert 0.3 < busy_while(work) < 0.7
