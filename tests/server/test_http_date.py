"""The Date header, formatted once a second (worker.CachedHttpDate)."""

import email.utils
import time

from gunicorn import util

from project.server.worker import CachedHttpDate


def test_now_is_the_current_second_as_gunicorn_formats_it():
    """The cached value is gunicorn's own text for the current second."""
    date = CachedHttpDate()
    before = int(time.time())
    text = date()
    after = int(time.time())
    assert text in {util.http_date(second) for second in range(before, after + 1)}
    assert email.utils.parsedate_to_datetime(text).tzname() == "UTC"


def test_it_moves_with_the_clock(monkeypatch):
    """A new second gives a new value; the same second, the same text."""
    now = [1_800_000_000.2]
    monkeypatch.setattr(time, "time", lambda: now[0])
    date = CachedHttpDate()
    first = date()
    now[0] = 1_800_000_000.9
    assert date() == first
    now[0] = 1_800_000_001.0
    assert date() != first
    assert date() == util.http_date(1_800_000_001)


def test_a_given_timestamp_is_formatted_not_cached():
    """``http_date(ts)`` callers get that time, not the cached second."""
    date = CachedHttpDate()
    date()
    assert date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
