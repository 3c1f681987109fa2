"""The request signals' dispatch in the server: receivers cached, close_caches
dropped only when no configured cache closes anything."""

from typing import Any

import pytest
from django.core.cache import close_caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.test import override_settings

from project.http import request_signals


class ClosingCache(LocMemCache):
    """A cache whose close() does something."""

    closed = 0

    def close(self, **kwargs: Any) -> None:
        """Count the call."""
        ClosingCache.closed += 1


@pytest.fixture
def restored():
    """Django's dispatch of the request signals again after the test."""
    yield
    for signal in (request_started, request_finished):
        signal.use_caching = False
        signal.sender_receivers_cache = {}
    request_finished.disconnect(close_caches)
    request_finished.connect(close_caches)


def receivers_of(signal) -> list:
    """The functions connected to ``signal`` now."""
    return [ref() for _, ref, _ in signal.receivers]


def test_close_caches_goes_when_no_cache_closes_anything(restored):
    """The test settings' caches close nothing: close_caches is disconnected."""
    assert request_signals.install()
    assert close_caches not in receivers_of(request_finished)
    assert request_started.use_caching and request_finished.use_caching


def test_close_caches_stays_for_a_cache_that_closes(restored):
    """A backend with a close() of its own keeps Django's receiver."""
    closing = {"default": {"BACKEND": f"{__name__}.ClosingCache"}}
    with override_settings(CACHES=closing):
        assert not request_signals.install()
    assert close_caches in receivers_of(request_finished)


def test_receivers_connected_later_are_called(restored):
    """Cached per sender, the receivers still follow connect and disconnect,
    and a response closed outside a handler (no sender) is dispatched too."""
    request_signals.install()
    calls = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    for sender in (WSGIHandler, None):
        request_finished.send(sender=sender)  # cached without the receiver
        request_finished.connect(receiver)
        request_finished.send(sender=sender)
        request_finished.disconnect(receiver)
        request_finished.send(sender=sender)
    assert calls == [WSGIHandler, None]
