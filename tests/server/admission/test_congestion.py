"""The control interval's congestion signals, read apart from the gate."""

import pytest

from project.server.admission.congestion import Congestion, Interval, piling_up
from project.server.admission.needed import NeededConcurrency
from project.server.admission.refusal_budget import REFUSAL_COST_S


def congestion(cpu: float) -> Congestion:
    """Signals over a loop that reads ``cpu`` busy every interval."""
    return Congestion(
        cpu_target=0.85,
        pool_wait_target_s=0.02,
        queue_timeout_s=0.1,
        cpu=lambda: cpu,
    )


def test_the_refusals_own_cpu_is_not_congestion():
    """A loop 95 % busy of which refusals took 40 points reads 55 % busy: the
    work of answering refusals must not keep the limit down and feed itself."""
    elapsed = 0.1
    refusals = round(0.4 * elapsed / REFUSAL_COST_S)
    signals = congestion(0.95)
    reading = signals.read(Interval(elapsed, 10, 0, 10, refusals), NeededConcurrency())
    assert reading.busy == pytest.approx(0.55, abs=1e-3)
    assert not reading.cpu_congested


def test_the_same_busy_loop_without_refusals_is_congested():
    """The control case of the test above: nothing refused, 95 % busy."""
    reading = congestion(0.95).read(Interval(0.1, 10, 0, 10, 0), NeededConcurrency())
    assert reading.busy == pytest.approx(0.95)
    assert reading.cpu_congested


def test_a_burst_of_arrivals_alone_is_not_work_piling_up():
    """The interval with the most arrivals is left out: a closed loop's clients
    arriving at once, then served as fast as they come, do not pile up."""
    assert not piling_up([(300, 20), (40, 40), (40, 40), (40, 40), (40, 40)])
    assert piling_up([(300, 20), (80, 40), (80, 40), (80, 40), (80, 40)])
    assert not piling_up([(300, 0)])


def test_the_interval_left_out_is_the_burst_not_a_steady_one_of_as_many():
    """A flow two W1 workers read under wrk (2 x 100 connections, fresh workers,
    2026-12-06): the burst of first requests (51 arrived, none served) and a
    steady interval with as many arrivals. Left out by arrivals, the steady one
    went and the burst read as piling for half a second."""
    assert not piling_up([(51, 0), (11, 11), (46, 46), (51, 51), (32, 32)])
    # The same burst with work piling up after it still reads as piling.
    assert piling_up([(51, 0), (40, 11), (46, 30), (51, 30), (32, 20)])


def test_retries_at_once_are_not_new_work():
    """Arrivals that are retries at once pile up as work, not as new work
    (which alone holds CoDel mode and the open model's tighter cap)."""
    signals = congestion(0.5)
    for _ in range(5):
        reading = signals.read(Interval(0.1, 100, 90, 20, 0), NeededConcurrency())
    assert reading.piling
    assert not reading.new_work_piling
