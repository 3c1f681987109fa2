import time

import pytest

from project.core.deadline import (
    Deadline,
    InvalidTimeout,
    parse_timeout_ms,
    request_deadline,
)


def test_remaining_shrinks_and_never_goes_negative():
    """Counts down from the budget and stops at zero."""
    deadline = Deadline(0.05)
    assert 0.0 < deadline.remaining() <= 0.05
    time.sleep(0.06)
    assert deadline.remaining() == 0.0


def test_timeout_is_what_is_left_less_the_margin_capped():
    """A call gets its cap, or what is left less the margin if that is less;
    never a negative time."""
    deadline = Deadline(10)
    assert deadline.timeout(0.5) == 0.5
    assert 9.0 < deadline.timeout() <= 10
    assert 9.0 < deadline.timeout(60) <= 10
    assert 6.0 < deadline.timeout(60, margin_s=3) <= 7
    assert deadline.timeout(0.5, margin_s=3) == 0.5
    assert deadline.timeout(margin_s=11) == 0.0
    assert Deadline(0).timeout(1.0) == 0.0


def test_narrowing_keeps_the_start_and_never_widens():
    """A narrower budget counts from the same start; a wider one changes nothing."""
    deadline = Deadline.from_ms(500, started=100.0, requested=True)
    narrow = deadline.narrowed(200)
    assert (narrow.started, narrow.expires, narrow.budget) == (100.0, 100.2, 0.2)
    assert narrow.requested
    assert deadline.narrowed(500) is deadline
    assert deadline.narrowed(60_000) is deadline
    assert narrow.narrowed(400).expires == 100.2


# The one grammar of X-Request-Timeout-Ms (max 5000 here): value → ms, None
# (not sent: the default) or "invalid" (a 400 naming the header).
GRAMMAR = [
    (None, None),
    ("", None),
    ("  \t", None),
    ("250", 250),
    ("1", 1),
    ("5000", 5000),
    (" 250 ", 250),
    ("\t250", 250),
    ("0250", 250),
    ("000000250", 250),
    ("0", "invalid"),
    ("5001", "invalid"),
    ("+100", "invalid"),
    ("-1", "invalid"),
    ("1e3", "invalid"),
    ("1.5", "invalid"),
    ("100.0", "invalid"),
    ("1_000", "invalid"),
    ("1 000", "invalid"),
    ("0x10", "invalid"),
    ("100ms", "invalid"),
    ("100,200", "invalid"),  # the header sent twice
    ("１２", "invalid"),  # fullwidth digits
    ("١٠", "invalid"),  # Arabic-Indic digits
    ("²", "invalid"),
    ("0000000250", "invalid"),  # ten digits
    ("9" * 5000, "invalid"),
    ("1" * 100_000, "invalid"),
    ("soon", "invalid"),
    ("250\n", "invalid"),
]


@pytest.mark.parametrize(("value", "outcome"), GRAMMAR)
def test_the_header_grammar(value, outcome):
    """1 to 9 ASCII digits worth 1 to the maximum, spaces or tabs around them;
    empty is not sent; anything else is refused, naming the header and range."""
    if outcome == "invalid":
        with pytest.raises(InvalidTimeout) as caught:
            parse_timeout_ms(value, max_ms=5000)
        assert str(caught.value) == (
            "X-Request-Timeout-Ms must be an integer between 1 and 5000"
        )
    else:
        assert parse_timeout_ms(value, max_ms=5000) == outcome


def test_a_huge_value_is_refused_without_converting_it():
    """Thousands of digits are refused by their length, before int()."""
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(InvalidTimeout):
            parse_timeout_ms("7" * 100_000, max_ms=5000)
    assert time.perf_counter() - started < 1.0


def test_request_deadline_counts_from_arrival_within_the_settings(settings):
    """The header's ms or REQUEST_DEADLINE_MS, from ``arrived``; over
    REQUEST_DEADLINE_MAX_MS is refused; ``requested`` tells them apart."""
    settings.REQUEST_DEADLINE_MS = 1500
    settings.REQUEST_DEADLINE_MAX_MS = 3000
    asked = request_deadline("250", arrived=100.0)
    assert (asked.started, asked.expires, asked.requested) == (100.0, 100.25, True)
    default = request_deadline(None, arrived=100.0)
    assert (default.expires, default.requested) == (101.5, False)
    assert request_deadline(" ", arrived=100.0).expires == 101.5
    assert request_deadline("3000", arrived=100.0).expires == 103.0
    with pytest.raises(InvalidTimeout, match="between 1 and 3000"):
        request_deadline("3001", arrived=100.0)
    before = time.monotonic()
    assert before <= request_deadline("5", arrived=None).started <= time.monotonic()
