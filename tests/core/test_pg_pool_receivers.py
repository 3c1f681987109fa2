"""The pool backend's request receivers in place of Django's, on a real PostgreSQL."""

from types import SimpleNamespace

import django.db
import gevent
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import connections

from project.core.pg_pool import receivers

pytestmark = pytest.mark.django_db(transaction=True)


def live(signal) -> list:
    """The functions connected to ``signal`` now."""
    return [ref() for _, ref, _ in signal.receivers]


@pytest.fixture
def installed():
    """The backend's receivers in place of Django's for the test, Django's after."""
    swaps = (
        (request_started, receivers.reset_queries, django.db.reset_queries),
        (
            request_started,
            receivers.close_old_connections,
            django.db.close_old_connections,
        ),
        (
            request_finished,
            receivers.close_old_connections,
            django.db.close_old_connections,
        ),
    )
    assert receivers.install()
    yield
    for signal, ours, djangos in swaps:
        signal.disconnect(ours)
        signal.connect(djangos)


def one_request(work=None) -> dict:
    """A request's signals around ``work`` in a greenlet of its own, as gunicorn's
    worker runs one; what its default connection looked like before the end."""
    seen = {}

    def run():
        request_started.send(sender=WSGIHandler, environ={})
        if work is not None:
            work()
            seen["open"] = connections["default"].connection is not None
        request_finished.send(sender=WSGIHandler)
        if work is not None:
            seen["open_after"] = connections["default"].connection is not None

    gevent.spawn(run).get(timeout=10)
    return seen


def query() -> None:
    """One query on the default connection."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def test_install_puts_them_in_the_place_of_djangos(installed):
    """Django's reset_queries and close_old_connections give way to the backend's."""
    started, finished = live(request_started), live(request_finished)
    assert receivers.reset_queries in started
    assert receivers.close_old_connections in started
    assert receivers.close_old_connections in finished
    assert django.db.reset_queries not in started
    assert django.db.close_old_connections not in started + finished


def test_a_request_that_used_the_database_gives_its_connection_back(installed):
    """request_finished closes the request's connection: back in the pool."""
    from project.core.pg_pool.pools import all_pools

    in_use = sum(pool.stats.in_use for pool in all_pools().values())
    seen = one_request(query)
    assert seen == {"open": True, "open_after": False}
    assert sum(pool.stats.in_use for pool in all_pools().values()) == in_use


def test_a_request_without_the_database_skips_djangos_receivers(installed, monkeypatch):
    """No wrapper made in the request's context: Django's receivers do not run;
    with one made, they do, at both signals."""
    calls = []
    monkeypatch.setattr(django.db, "reset_queries", lambda **kw: calls.append("reset"))
    monkeypatch.setattr(
        django.db, "close_old_connections", lambda **kw: calls.append("close")
    )
    one_request()
    assert calls == []
    one_request(lambda: connections["default"])
    assert calls == ["close"]  # the wrapper was made after request_started


def test_a_greenlet_that_made_a_wrapper_runs_djangos_at_every_later_request(
    installed, monkeypatch
):
    """A keep-alive connection's greenlet serves request after request: once the
    database was used there, both signals run Django's receivers."""
    calls = []

    def two_requests():
        query()
        request_finished.send(sender=WSGIHandler)
        assert connections["default"].connection is None
        monkeypatch.setattr(
            django.db, "reset_queries", lambda **kw: calls.append("reset")
        )
        monkeypatch.setattr(
            django.db, "close_old_connections", lambda **kw: calls.append("close")
        )
        request_started.send(sender=WSGIHandler, environ={})
        request_finished.send(sender=WSGIHandler)

    gevent.spawn(two_requests).get(timeout=10)
    assert calls == ["reset", "close", "close"]


def test_install_declines_when_a_database_uses_another_backend(monkeypatch):
    """Another backend's wrappers are not marked: Django's receivers stay."""
    databases = {
        "default": {"ENGINE": receivers.ENGINE},
        "other": {"ENGINE": "django.db.backends.postgresql"},
    }
    monkeypatch.setattr(receivers, "settings", SimpleNamespace(DATABASES=databases))
    assert not receivers.install()
    assert django.db.close_old_connections in live(request_finished)
