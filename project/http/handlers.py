"""Django's error views as JSON: ``handler400/404/500`` and ``CSRF_FAILURE_VIEW``."""

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, JsonResponse

from .errors import ApiError, error_response


def bad_request(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    """JSON 400 for requests Django rejects before any view (bad Host, bad body)."""
    if isinstance(exception, DisallowedHost):
        # Django's message names the host and hints at ALLOWED_HOSTS: not for clients.
        return error_response(ApiError("invalid Host header"))
    return error_response(ApiError("bad request"))


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """JSON 404 for unknown paths."""
    return error_response(ApiError("not found", status=404, path=request.path))


def server_error(request: HttpRequest) -> JsonResponse:
    """JSON 500: a bug on our side; the details are in the log, not the response."""
    return error_response(ApiError("internal server error", status=500))


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """JSON 403 for CSRF failures (``CSRF_FAILURE_VIEW``)."""
    return error_response(
        ApiError("CSRF verification failed", status=403, reason=reason)
    )
