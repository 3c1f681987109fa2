"""Django's request signals, dispatched for less in the server's process.

Every request sends ``request_started`` and ``request_finished``. Django's
``Signal`` filters its receivers by sender under the signal's lock on every
send unless it caches them (as it does for the model signals), and
``close_caches``, connected to ``request_finished``, looks each cache alias
up in the caches' per-context storage (asgiref's ``Local``: a lock and a
``ContextVar`` per lookup) to call a ``close()`` that does nothing for the
backends this service configures: ``_live_receivers`` was 1.0 % of a W1
worker and ``close_caches`` 0.6 % (``profile_fanout``).
"""

from django.conf import settings
from django.core.cache import close_caches
from django.core.cache.backends.base import BaseCache
from django.core.signals import request_finished, request_started
from django.utils.module_loading import import_string

from project.core.fallback_cache import FallbackCache

# ``close()`` of these closes nothing: Django's base (the in-memory caches,
# Redis, whose client keeps its pool) and the fallback cache's own.
NO_OP_CLOSES = frozenset({BaseCache.close, FallbackCache.close})


def install() -> bool:
    """Cache the request signals' receivers per sender, and disconnect
    ``close_caches`` when no configured cache's ``close()`` does anything;
    True if it was disconnected.

    Caching is Django's own mechanism: ``connect`` and ``disconnect`` clear
    the cache, so a receiver connected later is still called. The cache is a
    plain dict, not Django's weak one: a response closed outside a handler
    sends ``request_finished`` with no sender (``None``), which a weak key
    cannot hold; the senders are handler classes, which live as long as the
    process.
    """
    for signal in (request_started, request_finished):
        signal.use_caching = True
        signal.sender_receivers_cache = {}
    if not all(
        import_string(cache["BACKEND"]).close in NO_OP_CLOSES
        for cache in settings.CACHES.values()
    ):
        return False
    request_finished.disconnect(close_caches)
    return True
