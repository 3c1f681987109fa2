"""The worker reads each request's deadline once and hands it to Django."""

import contextvars

import pytest
from django.test import override_settings

from project.core.deadline import Deadline, InvalidTimeout
from project.core.request_context import DEADLINE_KEY
from project.server import worker

# As gunicorn's parser spells it.
H = "X-REQUEST-TIMEOUT-MS"


@override_settings(REQUEST_DEADLINE_MS=15000, REQUEST_DEADLINE_MAX_MS=60000)
@pytest.mark.parametrize(
    ("headers", "seconds", "requested"),
    [
        ([(H, "250")], 0.25, True),
        ([(H, " 60000 ")], 60.0, True),
        ([], 15.0, False),
        ([(H, "")], 15.0, False),
        ([(H, "250"), (H, "250")], None, None),
        ([(H, "+100")], None, None),
        ([(H, "0")], None, None),
        ([(H, "60001")], None, None),
        ([(H, "１２")], None, None),
        ([(H, "9" * 5000)], None, None),
    ],
)
def test_the_deadline_counts_from_arrival(headers, seconds, requested):
    """A valid header (or none) is the deadline from arrival, and admission's
    due time; an invalid one goes on as the error, due at the default."""
    carried, due = worker.read_deadline([("HOST", "x"), *headers], 100.0)
    if seconds is None:
        assert isinstance(carried, InvalidTimeout)
        assert due == 115.0
    else:
        assert isinstance(carried, Deadline)
        assert (carried.started, carried.requested) == (100.0, requested)
        assert carried.expires == due == pytest.approx(100.0 + seconds)


def test_the_application_gets_what_was_read_in_its_environ():
    """The wrapped application finds the worker's deadline, the very object,
    under DEADLINE_KEY; each request its own."""
    seen = []

    def app(environ, start_response):
        seen.append(environ.get(DEADLINE_KEY))
        return [b"ok"]

    wrapped = worker.carrying_deadline(app)
    first = Deadline(1.0)
    second = InvalidTimeout("bad")

    def serve(carried):
        worker._carried.set(carried)
        return wrapped({}, None)

    assert contextvars.copy_context().run(serve, first) == [b"ok"]
    contextvars.copy_context().run(serve, second)
    assert contextvars.copy_context().run(wrapped, {}, None) == [b"ok"]
    assert seen == [first, second, None]
