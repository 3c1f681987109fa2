"""Request metrics: counts, durations, requests in flight, client disconnects."""

import time
from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse

from project.core import metrics

# Methods kept as labels; any other is "other" (a client picks the method, and
# every label value is a series).
METHODS = frozenset({"GET", "HEAD", "POST"})
UNMATCHED = "unmatched"
# nginx's "client closed request": the service answers it when a client hangs up.
CLIENT_GONE = 499
# A scrape does not count itself in flight: it would never read 0.
SCRAPE_PATH = "/metrics"


def route_of(request: HttpRequest) -> str:
    """The URL pattern's name (``namespace:name``), or "unmatched" for a 404."""
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else UNMATCHED


def method_of(request: HttpRequest) -> str:
    """GET, HEAD, POST or "other"."""
    method = (request.method or "").upper()
    return method if method in METHODS else "other"


def status_class(status: int) -> str:
    """``404`` → "4xx"."""
    return f"{status // 100}xx"


class RequestMetricsMiddleware:
    """First in ``MIDDLEWARE``: times every answer, the other middleware's too.

    Labels are the route's name, never its path, so a scan of random URLs
    adds one series ("unmatched"), not one per URL. Removed from the chain
    (``MiddlewareNotUsed``) when ``METRICS_ENABLED`` is false.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if not metrics.enabled():
            raise MiddlewareNotUsed("METRICS_ENABLED is false")
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Count and time the request around the rest of the chain."""
        in_flight = request.path_info != SCRAPE_PATH
        if in_flight:
            metrics.REQUESTS_IN_FLIGHT.inc()
        started = time.perf_counter()
        status = 500  # an exception escaping Django's own handling
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - started
            if in_flight:
                metrics.REQUESTS_IN_FLIGHT.dec()
            self._record(request, status, elapsed)

    @staticmethod
    def _record(request: HttpRequest, status: int, elapsed: float) -> None:
        route = route_of(request)
        labels = (route, method_of(request), status_class(status))
        metrics.REQUESTS.labels(*labels).inc()
        metrics.REQUEST_DURATION.labels(*labels).observe(elapsed)
        if status == CLIENT_GONE:
            metrics.CLIENT_DISCONNECTS.labels(route).inc()
