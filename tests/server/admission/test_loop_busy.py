"""The event loop's busy fraction."""

import time
from collections.abc import Callable

import gevent

from project.core import schedstat
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


def test_waiting_for_a_cpu_while_polling_is_busy_or_waiting(tmp_path):
    """A poll that ended only when the kernel ran the worker again looked idle:
    ``busy_or_waiting`` takes the run-queue wait the kernel reports off the
    idle time (an idle loop that waited 150 ms of 200 for a CPU: about 0.75),
    ``sample`` still reads the loop alone."""
    schedstat = tmp_path / "schedstat"
    schedstat.write_text("1000 5000000000 10\n")
    busy = LoopBusy(schedstat=str(schedstat))
    busy.start()
    try:
        gevent.sleep(0.01)
        busy.sample()
        gevent.sleep(0.2)
        schedstat.write_text("1000 5150000000 12\n")
        assert busy.sample() < 0.2
        assert 0.6 < busy.busy_or_waiting < 0.9
        gevent.sleep(0.2)  # no further wait: idle again
        busy.sample()
        assert busy.busy_or_waiting < 0.2
    finally:
        busy.stop()


def test_the_threads_own_schedstat_is_read_on_linux():
    """The kernel's counter for the calling thread, in seconds and growing."""
    path = schedstat.thread_path()
    assert path is not None
    first = LoopBusy._run_queue_s(path)
    assert first >= 0.0
    assert LoopBusy._run_queue_s(path) >= first
