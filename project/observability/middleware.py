"""Request metrics: counts, durations, requests in flight, client disconnects.

Counted per worker in plain numbers (``RequestTally``) and written to the
shared metric files in batches: once a second (the loop monitor's tick),
before every exposition and when a worker exits. Written per request, the
in-flight gauge's two moves and the count and duration (each a locked write
with a pid check, after a label lookup) were 1.3 % of a W1 worker's CPU. A
scrape served by one worker sees the other workers' requests up to a second
late, as it does their upstream attempts.
"""

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


class _Series:
    """One (route, method, status class) series: its children and what is pending."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.requests = metrics.PendingCounter(metrics.REQUESTS.labels(*labels))
        self.duration = metrics.PendingHistogram(
            metrics.REQUEST_DURATION.labels(*labels)
        )

    def flush(self) -> None:
        self.requests.flush()
        self.duration.flush()


class RequestTally:
    """This worker's requests in flight and answered, until ``flush`` writes them.

    Series are made on first use and kept (their labels are route names,
    methods and status classes: a few dozen).
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._registered = False

    def register(self) -> None:
        """Have ``metrics.flush_batched`` write this tally (once per process)."""
        if not self._registered:
            metrics.before_exposition(self.flush)
            self._registered = True

    def answered(self, labels: tuple[str, str, str], seconds: float) -> None:
        """Count one answer of the series ``labels`` and its time."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series(labels)
        series.requests.inc()
        series.duration.observe(seconds)

    def flush(self) -> None:
        """Write the requests in flight now and the answers counted since the
        last flush."""
        metrics.REQUESTS_IN_FLIGHT.set(self.in_flight)
        for series in self._series.values():
            series.flush()


# This worker's tally (gunicorn imports Django, and this, after the fork).
_tally = RequestTally()


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
        _tally.register()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Count and time the request around the rest of the chain."""
        in_flight = request.path_info != SCRAPE_PATH
        if in_flight:
            _tally.in_flight += 1
        started = time.perf_counter()
        status = 500  # an exception escaping Django's own handling
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - started
            if in_flight:
                _tally.in_flight -= 1
            self._record(request, status, elapsed)

    @staticmethod
    def _record(request: HttpRequest, status: int, elapsed: float) -> None:
        route = route_of(request)
        _tally.answered((route, method_of(request), status_class(status)), elapsed)
        if status == CLIENT_GONE:
            metrics.CLIENT_DISCONNECTS.labels(route).inc()
