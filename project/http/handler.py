"""The WSGI application: Django's handler, with each path's route remembered.

Django resolves every request's path against the URLconf from the top: a
request to ``/demo/fan-out/`` tries the health, metrics and API routes first,
pattern by pattern, building the list of what it tried as it goes
(``URLResolver.resolve``: about 10 us a request, 2.4 % of a W1 worker). The
routes of a URLconf do not change while a worker runs, so the match of a path
is remembered, per resolver, and each request gets its own copy of it.
"""

from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest
from django.urls import ResolverMatch, URLResolver, get_resolver

# Paths remembered per worker. The service has a few dozen routes; a path with
# a captured part (``/api/aggregate/<name>/``) is one entry per value, so the
# oldest entry goes when a client walks through values (1024 entries of a few
# hundred bytes each).
MAX_PATHS = 1024

_matches: dict[tuple[URLResolver, str], ResolverMatch] = {}


class CachingWSGIHandler(WSGIHandler):
    """Django's WSGI handler; resolving a path it has resolved before is a lookup.

    A request with its own ``urlconf`` (set by a middleware) is resolved the
    usual way, and so is a path that resolves to nothing (Django's 404). The
    key holds the resolver, so a changed ``ROOT_URLCONF`` (tests'
    ``override_settings``, which clears Django's resolver cache) starts afresh.
    """

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """The request's route, as ``BaseHandler.resolve_request`` finds it."""
        if hasattr(request, "urlconf"):
            return super().resolve_request(request)
        key = (get_resolver(), request.path_info)
        match = _matches.get(key)
        if match is None:
            match = key[0].resolve(request.path_info)
            if len(_matches) >= MAX_PATHS:
                del _matches[next(iter(_matches))]
            _matches[key] = match
        match = _copy(match)
        request.resolver_match = match
        return match


def _copy(match: ResolverMatch) -> ResolverMatch:
    """A match of its own for one request, its dicts and lists too: a view or
    middleware that changes its keyword arguments changes no other request's
    (``copy.copy`` refuses: a ``ResolverMatch`` cannot be pickled)."""
    copied: Any = ResolverMatch.__new__(ResolverMatch)
    copied.__dict__.update(
        {
            name: value.copy() if isinstance(value, dict | list) else value
            for name, value in match.__dict__.items()
        }
    )
    return copied


def get_wsgi_application() -> CachingWSGIHandler:
    """Set Django up and return the WSGI callable (``django.core.wsgi``'s, with
    the handler above and the pool backend's request receivers in the place of
    Django's, ``pg_pool.receivers``, and the request signals dispatched for
    less, ``request_signals``)."""
    import django

    from project.core.pg_pool import receivers

    from . import request_signals

    django.setup(set_prefix=False)
    receivers.install()
    request_signals.install()
    return CachingWSGIHandler()
