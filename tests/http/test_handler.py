"""The WSGI handler that remembers each path's route."""

import pytest
from django.test import RequestFactory, override_settings
from django.urls import Resolver404, get_resolver, path, set_urlconf

from project.http import handler
from project.http.handler import CachingWSGIHandler


def view(request, **kwargs):
    """A view for the URLconf below."""


urlpatterns = [path("things/<str:name>/", view, name="thing")]


@pytest.fixture
def fresh_matches(monkeypatch):
    """An empty table of remembered paths for the test."""
    monkeypatch.setattr(handler, "_matches", {})


def resolve(path_info: str, **attributes):
    """Resolve ``path_info`` the handler's way; the request and its match."""
    request = RequestFactory().get(path_info)
    for name, value in attributes.items():
        setattr(request, name, value)
    return request, CachingWSGIHandler().resolve_request(request)


def test_a_remembered_path_resolves_as_django_resolves_it(fresh_matches):
    """The first and the second resolution equal Django's own, set on the request."""
    expected = get_resolver().resolve("/demo/fan-out/")
    for _ in range(2):
        request, match = resolve("/demo/fan-out/")
        assert request.resolver_match is match
        assert (match.func, match.args, match.kwargs, match.route) == (
            expected.func,
            expected.args,
            expected.kwargs,
            expected.route,
        )
        assert match.view_name == expected.view_name
    assert len(handler._matches) == 1


@override_settings(ROOT_URLCONF=__name__)
def test_each_request_gets_its_own_match(fresh_matches):
    """Changing one request's keyword arguments leaves the next request's alone."""
    _, first = resolve("/things/a/")
    first.kwargs["name"] = "changed"
    first.captured_kwargs["extra"] = 1
    _, second = resolve("/things/a/")
    assert second.kwargs == {"name": "a"}
    assert second.captured_kwargs == {"name": "a"}


@override_settings(ROOT_URLCONF=__name__)
def test_another_urlconf_is_not_answered_from_the_first(fresh_matches):
    """A changed ROOT_URLCONF resolves against its own patterns."""
    _, match = resolve("/things/a/")
    assert match.url_name == "thing"
    with override_settings(ROOT_URLCONF="project.urls"), pytest.raises(Resolver404):
        resolve("/things/a/")


def test_a_path_that_resolves_to_nothing_is_not_remembered(fresh_matches):
    """Django's 404 for an unknown path; nothing kept for it."""
    with pytest.raises(Resolver404):
        resolve("/no/such/path/")
    assert handler._matches == {}


def test_a_request_with_its_own_urlconf_is_resolved_the_usual_way(fresh_matches):
    """request.urlconf (set by a middleware) wins, and is not remembered."""
    try:
        _, match = resolve("/things/a/", urlconf=__name__)
    finally:
        set_urlconf(None)  # Django's handler does this when the request ends
    assert match.url_name == "thing"
    assert handler._matches == {}


@override_settings(ROOT_URLCONF=__name__)
def test_the_oldest_path_goes_when_the_table_is_full(fresh_matches, monkeypatch):
    """At MAX_PATHS entries the oldest is dropped for the newest."""
    monkeypatch.setattr(handler, "MAX_PATHS", 2)
    for name in ("a", "b", "c"):
        resolve(f"/things/{name}/")
    assert [key[1] for key in handler._matches] == ["/things/b/", "/things/c/"]
