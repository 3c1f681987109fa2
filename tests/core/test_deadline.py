import time

from project.core.deadline import Deadline


def test_remaining_shrinks_and_never_goes_negative():
    """Counts down from the budget and stops at zero."""
    deadline = Deadline(0.05)
    assert 0.0 < deadline.remaining() <= 0.05
    time.sleep(0.06)
    assert deadline.remaining() == 0.0
    assert deadline.expired


def test_leg_timeout_is_min_of_cap_and_remaining():
    """A leg gets its own cap, or what is left of the deadline if that is less."""
    deadline = Deadline(10)
    assert deadline.leg_timeout(0.5) == 0.5
    assert 9.0 < deadline.leg_timeout() <= 10
    assert 9.0 < deadline.leg_timeout(60) <= 10
