"""The per-request deadline scope: carried from the edge, or read here."""

import json

import pytest
from django.conf import settings
from django.test import RequestFactory

from project.core.deadline import Deadline, InvalidTimeout, activate, current_deadline
from project.core.request_context import DEADLINE_KEY
from project.http.middleware import RequestDeadlineMiddleware


def seen_by_the_view(request):
    """Run ``request`` through the middleware; the deadline its view saw."""
    seen = []

    def view(request):
        seen.append(current_deadline())
        return "response"

    assert RequestDeadlineMiddleware(view)(request) == "response"
    assert current_deadline() is None  # nothing left behind
    return seen[0]


def test_request_runs_under_the_default_deadline_and_leaves_none_behind():
    """A view sees REQUEST_DEADLINE_MS; after the request nothing is left behind."""
    seen = []

    def view(request):
        seen.append(current_deadline())
        activate(Deadline.from_ms(300))  # as a view narrowing it does
        seen.append(current_deadline())
        return "response"

    middleware = RequestDeadlineMiddleware(view)
    assert middleware(RequestFactory().get("/")) == "response"
    assert round(seen[0].budget, 3) == settings.REQUEST_DEADLINE_MS / 1000
    assert not seen[0].requested
    assert round(seen[1].budget, 3) == 0.3
    assert current_deadline() is None


def test_the_header_is_the_deadline_outside_gunicorn():
    """Without the worker's deadline the header is read here: exactly its ms."""
    request = RequestFactory().get("/", headers={"X-Request-Timeout-Ms": "250"})
    deadline = seen_by_the_view(request)
    assert deadline.budget == 0.25
    assert deadline.requested


def test_the_deadline_the_worker_carried_is_the_one_used():
    """The environ's deadline (read on arrival) is the view's, as it is: the
    header is not read again."""
    carried = Deadline.from_ms(700, started=12.5, requested=True)
    request = RequestFactory().get("/", headers={"X-Request-Timeout-Ms": "100"})
    request.META[DEADLINE_KEY] = carried
    assert seen_by_the_view(request) is carried


@pytest.mark.parametrize(
    "meta",
    [
        {"HTTP_X_REQUEST_TIMEOUT_MS": "+100"},
        {"HTTP_X_REQUEST_TIMEOUT_MS": "60001"},
        {DEADLINE_KEY: InvalidTimeout("X-Request-Timeout-Ms must be 1 to 9")},
    ],
)
def test_an_invalid_header_is_a_400_naming_it(meta):
    """Read here or at the edge, an invalid header is a JSON 400; no view runs."""

    def view(request):
        raise AssertionError("the view ran")

    response = RequestDeadlineMiddleware(view)(RequestFactory().get("/", **meta))
    assert response.status_code == 400
    body = json.loads(response.content)
    assert body["param"] == "X-Request-Timeout-Ms"
    assert "X-Request-Timeout-Ms must be" in body["error"]
