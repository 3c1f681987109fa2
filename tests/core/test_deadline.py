import time

import pytest

from project.core.deadline import Deadline, deadline_from_header
from project.core.errors import ApiError


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


def test_header_sets_deadline_within_cap():
    """Uses X-Request-Timeout-Ms when given, the default otherwise."""
    assert deadline_from_header("250", default_ms=1000, max_ms=5000).budget == 0.25
    assert deadline_from_header(None, default_ms=1000, max_ms=5000).budget == 1.0
    assert deadline_from_header(" ", default_ms=1000, max_ms=5000).budget == 1.0


@pytest.mark.parametrize("value", ["0", "-1", "abc", "5001", "1.5"])
def test_header_rejects_bad_values(value):
    """Returns 400 naming the header when it is not an integer in 1..max."""
    with pytest.raises(ApiError) as caught:
        deadline_from_header(value, default_ms=1000, max_ms=5000)
    assert caught.value.extra["param"] == "X-Request-Timeout-Ms"
