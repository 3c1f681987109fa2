"""The request deadline from X-Request-Timeout-Ms."""

import pytest

from project.http.deadline import deadline_from_header
from project.http.errors import ApiError


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
