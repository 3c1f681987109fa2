"""X-Request-ID: accepted, replaced or made; current for the request; on every
answer and log record."""

import logging

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import path

import project.urls
from project.core.request_context import ROUTE_KEY, current_request_id
from project.server.log_filters import RequestIdFilter

logger = logging.getLogger(__name__)


def boom(request):
    logger.warning("about to fail")
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", boom), *project.urls.urlpatterns]
handler400 = project.urls.handler400
handler404 = project.urls.handler404
handler500 = project.urls.handler500

GOOD = "client-id_1.2:3"


@pytest.fixture
def client():
    return Client(raise_request_exception=False)


def test_a_valid_id_is_kept_and_returned(client):
    response = client.get("/healthz", headers={"X-Request-ID": GOOD})
    assert response.status_code == 200
    assert response["X-Request-ID"] == GOOD


def test_an_id_is_made_when_none_is_sent(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


@pytest.mark.parametrize("sent", ["", "x" * 65, "a b", "a'b*/", "é"])
def test_an_invalid_id_is_replaced_not_refused_and_logged_at_debug(
    client, caplog, sent
):
    caplog.set_level(logging.DEBUG, logger="project.http.middleware")
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.status_code == 200
    made = response["X-Request-ID"]
    assert made != sent and len(made) == 32
    [record] = [r for r in caplog.records if "replaced by" in r.getMessage()]
    assert record.levelno == logging.DEBUG and made in record.getMessage()


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize(
    ("method", "path", "extra", "status"),
    [
        ("get", "/healthz", {}, 200),
        ("get", "/healthz", {"headers": {"host": "evil.example"}}, 400),
        ("get", "/no-such-page/", {}, 404),
        ("post", "/healthz", {"data": b"x", "content_type": "text/plain"}, 413),
        ("get", "/boom/", {}, 500),
    ],
)
def test_every_kind_of_answer_carries_the_id(client, method, path, extra, status):
    headers = {"X-Request-ID": GOOD, **extra.pop("headers", {})}
    response = getattr(client, method)(path, headers=headers, **extra)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response["X-Request-ID"] == GOOD


@override_settings(ROOT_URLCONF=__name__)
def test_log_records_of_the_request_carry_its_id(client, caplog):
    """The view's own record and Django's 500 record name the request."""
    caplog.handler.addFilter(RequestIdFilter())
    client.get("/boom/", headers={"X-Request-ID": GOOD})
    mine = [r for r in caplog.records if r.getMessage() == "about to fail"]
    django = [r for r in caplog.records if r.name == "django.request"]
    assert mine and django
    assert {r.request_id for r in mine + django} == {GOOD}
    assert current_request_id() is None  # nothing left behind


def test_django_records_of_error_answers_carry_the_id(client, caplog):
    """Django logs a 404 after the middleware returned: the record still names it."""
    caplog.handler.addFilter(RequestIdFilter())
    client.get("/no-such-page/", headers={"X-Request-ID": GOOD})
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.request_id == GOOD


def test_the_matched_route_goes_to_the_environ(client):
    response = client.get("/healthz")
    assert response.wsgi_request.META[ROUTE_KEY] == "healthz"
    response = client.get("/no-such-page/")
    assert ROUTE_KEY not in response.wsgi_request.META


def test_every_configured_handler_names_the_request():
    """Each handler of LOGGING adds the id and prints it (plain format)."""
    handlers = logging.getLogger().handlers
    configured = [h for h in handlers if not type(h).__module__.startswith("_pytest")]
    assert len(configured) == len(settings.LOGGING["handlers"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    for handler in configured:
        assert any(isinstance(f, RequestIdFilter) for f in handler.filters)
        handler.filter(record)
        assert "rid=-" in handler.format(record)
