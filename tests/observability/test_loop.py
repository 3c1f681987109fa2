"""The event loop's health: lag, blocked episodes and their log, greenlets."""

import logging
import traceback

import gevent
import pytest
from gevent import monkey

from project.core import fanout
from project.core.deadline import Deadline
from project.observability import blocking, loop
from project.observability.blocking import BlockedLoopLog, site_of
from tests.metrics_samples import sample as value

# Test-only: a sleep that holds the loop, as CPU work or an unpatched call would.
blocking_sleep = monkey.get_original("time", "sleep")


@pytest.fixture
def monitor():
    started = loop.LoopMonitor(max_blocking_time=0.05, period=0.02)
    started.start()
    yield started
    started.stop()


def hold_the_loop(seconds: float) -> None:
    blocking_sleep(seconds)


def test_blocking_the_loop_shows_as_lag_and_a_blocked_episode(monitor, caplog):
    gevent.sleep(0.1)  # the monitor thread and the lag timer are running
    lag_sum = value("gd_event_loop_lag_seconds_sum")
    blocked = value("gd_event_loop_blocked_total")
    with caplog.at_level(logging.WARNING, logger=blocking.__name__):
        hold_the_loop(0.4)
        gevent.sleep(0.2)
    assert value("gd_event_loop_lag_seconds_sum") - lag_sum >= 0.3
    assert value("gd_event_loop_blocked_total") - blocked >= 1
    [record] = [r for r in caplog.records if "event loop blocked" in r.getMessage()]
    assert "hold_the_loop" in record.getMessage()  # the blocking stack


def test_a_quiet_loop_ticks_on_time(monitor):
    """The timer fires every period with little lag. (No assertion on blocked
    episodes: on a loaded machine the OS may pause the process past 50 ms.)"""
    gevent.sleep(0.1)
    lag_sum = value("gd_event_loop_lag_seconds_sum")
    count = value("gd_event_loop_lag_seconds_count")
    gevent.sleep(0.5)
    ticks = value("gd_event_loop_lag_seconds_count") - count
    assert ticks >= 10
    assert (value("gd_event_loop_lag_seconds_sum") - lag_sum) / ticks < 0.05


def test_each_site_is_logged_once_and_at_most_once_per_interval(caplog):
    """Every episode counts; the log names a new site, rate-limited."""
    log = BlockedLoopLog(log_interval=60.0)
    before = value("gd_event_loop_blocked_total")
    with caplog.at_level(logging.WARNING, logger=blocking.__name__):
        log.queued.extend([("a.py:1 f", 0.1, ["stack a\n"])] * 3)
        log.queued.append(("b.py:2 g", 0.1, ["stack b\n"]))
        log.drain()
        log.last_log = float("-inf")  # the interval has passed
        log.queued.extend([("a.py:1 f", 0.1, ["stack a\n"]), ("b.py:2 g", 0.1, [])])
        log.drain()
    assert value("gd_event_loop_blocked_total") - before == 6
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(":\n")[0] for m in messages] == [
        "event loop blocked for more than 0.100 s at a.py:1 f",
        "event loop blocked for more than 0.100 s at b.py:2 g",
    ]


def test_a_site_is_the_innermost_frames_of_project_code():
    project = blocking.PROJECT_DIR
    stack = traceback.StackSummary.from_list(
        [
            ("/venv/gunicorn/workers/ggevent.py", 10, "handle", None),
            (f"{project}/demo/views.py", 40, "delay", None),
            (f"{project}/core/fanout.py", 99, "run", None),
            ("/venv/psycopg2/extras.py", 5, "wait", None),
        ]
    )
    assert site_of(stack) == (
        "project/core/fanout.py:99 run < project/demo/views.py:40 delay"
    )
    assert site_of(traceback.StackSummary.from_list([])) == "outside project code"


def test_greenlet_estimate_counts_fan_out_legs_in_flight():
    def leg(timeout: float) -> None:
        gevent.sleep(0.3)

    legs = [fanout.Leg(str(index), leg) for index in range(5)]
    runner = gevent.spawn(fanout.fan_out, legs, deadline=Deadline(5.0))
    gevent.sleep(0.1)
    assert loop.greenlets_estimate() == 5
    runner.get(timeout=5)
    assert loop.greenlets_estimate() == 0
