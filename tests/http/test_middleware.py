"""The per-request deadline scope."""

from django.conf import settings
from django.test import RequestFactory

from project.core.deadline import Deadline, activate, current_deadline
from project.http.middleware import RequestDeadlineMiddleware


def test_request_runs_under_the_default_deadline_and_leaves_none_behind():
    """A view sees REQUEST_DEADLINE_MS; after the request nothing is left behind."""
    seen = []

    def view(request):
        seen.append(current_deadline())
        activate(Deadline.from_ms(300))  # as request_deadline() does for a header
        seen.append(current_deadline())
        return "response"

    middleware = RequestDeadlineMiddleware(view)
    assert middleware(RequestFactory().get("/")) == "response"
    assert round(seen[0].budget, 3) == settings.REQUEST_DEADLINE_MS / 1000
    assert round(seen[1].budget, 3) == 0.3
    assert current_deadline() is None
