"""Middleware: request ids, the caller, no request bodies, each request's
deadline, API errors as JSON."""

import logging
import socket
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from project.core.caller import caller_scope, current_caller
from project.core.deadline import (
    DEADLINE_HEADER,
    InvalidTimeout,
    deadline_scope,
    request_deadline,
)
from project.core.pg_pool.errors import PoolTimeout
from project.core.request_context import (
    DEADLINE_KEY,
    REQUEST_ID_HEADER,
    REQUEST_ID_KEY,
    ROUTE_KEY,
    is_valid_request_id,
    new_request_id,
    request_id_scope,
)
from project.core.route_priority import RoutePriorities
from project.core.route_priority import traffic_class as route_traffic_class

from .errors import ApiError, error_response

logger = logging.getLogger(__name__)

# X-Request-ID as the WSGI environ names it. Read there, not through
# ``request.headers``, which builds a mapping of every header per request
# (0.4 % of a W1 worker) that nothing else on the path asks for.
REQUEST_ID_META = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


class RequestIdMiddleware:
    """Give every request an id: the client's ``X-Request-ID`` or a new one.

    A valid id (1-64 of ``[A-Za-z0-9._:-]``) is kept; anything else is replaced,
    not refused, since an id is for tracing, not a reason to fail a request.
    The id is current for the request (logs, SQL comments, upstream calls),
    goes back in every answer's ``X-Request-ID``, and the matched route goes to
    the environ for the access log. First in ``MIDDLEWARE``, so the answers of
    the other middleware and of Django's error handlers carry it too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Run the request under its id; return the answer with the id."""
        sent = request.META.get(REQUEST_ID_META)
        request_id = sent if is_valid_request_id(sent) else new_request_id()
        # For Django's records of 4xx/5xx answers, written after this returns.
        request.META[REQUEST_ID_KEY] = request_id
        with request_id_scope(request_id):
            if sent is not None and sent != request_id:
                logger.debug("X-Request-ID %r replaced by %s", sent[:100], request_id)
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        match = request.resolver_match
        if match is not None:
            # request.META is the environ gunicorn hands to its access logger.
            request.META[ROUTE_KEY] = match.view_name
        return response


class CallerMiddleware:
    """Name the caller (``project.core.caller``) when the worker has not.

    The gunicorn worker sets it around each admitted request, from the peer
    address and the route's priority; requests served otherwise (Django's
    test client, another WSGI server) get the same from ``REMOTE_ADDR`` and
    ``SHED_ROUTES`` here, so upstream pools, bulkheads and breakers share
    out by client everywhere. A view that authenticates a client may narrow
    the key further (the aggregation API uses its bearer token's).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.routes = RoutePriorities.parse(settings.SHED_ROUTES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Run the request under its caller."""
        if current_caller() is not None:
            return self.get_response(request)
        traffic_class = route_traffic_class(self.routes.priority(request.path))
        client = request.META.get("REMOTE_ADDR") or ""
        with caller_scope(client=client, traffic_class=traffic_class):
            return self.get_response(request)


class RefuseRequestBodyMiddleware:
    """Answer any request that carries a body with a 413, and close the connection.

    Every endpoint here is GET-only. gunicorn would otherwise read and discard
    an unread body before the next request on the connection: a client
    streaming an endless chunked body held its greenlet (and a share of the
    worker's CPU) for as long as it liked. Shutting down the socket's read
    side ends that at once: the discard sees end-of-stream and gunicorn closes
    the connection after the 413. (Behind the proxy of the deployment, the
    proxy's ``client_max_body_size`` stops it earlier.)
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Refuse a body; pass anything else through."""
        meta = request.META
        length = (meta.get("CONTENT_LENGTH") or "").strip()
        chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and length in ("", "0"):
            return self.get_response(request)
        sock = meta.get("gunicorn.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already gone
        return error_response(
            ApiError(
                "request body not accepted (every endpoint is GET-only)", status=413
            )
        )


class RequestDeadlineMiddleware:
    """Run every request under its deadline; a malformed one is a 400.

    The deadline is the one the gunicorn worker read as the request arrived
    (``DEADLINE_KEY`` in the environ); served otherwise (Django's test client,
    ``runserver``) it is read here, by the same ``request_deadline``: the
    ``X-Request-Timeout-Ms`` header within ``MAX_DEADLINE_MS``, or
    ``REQUEST_DEADLINE_MS``. Code far below the view (a pool checkout) reads
    it, so no wait outlasts the request; a view may narrow it. Scoped: a
    keep-alive connection's next request starts afresh.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Run the request under its deadline, or answer 400 naming the header."""
        carried = request.META.get(DEADLINE_KEY)
        if carried is None:
            try:
                carried = request_deadline(
                    request.headers.get(DEADLINE_HEADER), arrived=None
                )
            except InvalidTimeout as exc:
                carried = exc
        if isinstance(carried, InvalidTimeout):
            return error_response(ApiError(str(carried), param=DEADLINE_HEADER))
        with deadline_scope(carried):
            return self.get_response(request)


class ApiErrorMiddleware:
    """Turn ``ApiError`` into its JSON response and lost databases into a 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Pass the request through unchanged."""
        return self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        """Render known errors; leave anything else to Django's 500 handling."""
        if isinstance(exception, ApiError):
            return error_response(exception)
        if isinstance(exception.__cause__, PoolTimeout):
            logger.warning(
                "database pool exhausted for %s: %s", request.path, exception
            )
            return error_response(
                ApiError(
                    "database busy: no connection free in time",
                    status=503,
                    headers={"Retry-After": "1"},
                )
            )
        if isinstance(exception, OperationalError | InterfaceError):
            # The details (hosts, socket paths) go to the log, not to clients.
            logger.warning("database unavailable for %s: %s", request.path, exception)
            return error_response(
                ApiError(
                    "database unavailable", status=503, headers={"Retry-After": "1"}
                )
            )
        return None
