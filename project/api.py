"""Small helpers shared by the JSON views."""

import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from project.core.deadline import Deadline, activate, deadline_from_header


class FiniteJSONEncoder(DjangoJSONEncoder):
    """Django's encoder that never writes ``NaN``/``Infinity`` (they are not JSON).

    Such floats (a PostgreSQL ``'NaN'::float`` in a row, say) become ``null``.
    The first attempt refuses them, so answers without one cost nothing extra.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_nan"] = False
        super().__init__(*args, **kwargs)

    def encode(self, o: Any) -> str:
        """JSON text of ``o``, non-finite floats as ``null``."""
        try:
            return super().encode(o)
        except ValueError:
            return super().encode(_finite(o))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def json_get(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Allow only GET/HEAD; answer anything else with a JSON 405.

    Exempt from CSRF checks: the view never acts on an unsafe method, and a 403
    about cookies would hide the real answer (405).
    """

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return JsonResponse(
                {"error": f"method {request.method} not allowed", "allowed": ["GET"]},
                status=405,
                headers={"Allow": "GET, HEAD"},
            )
        return view(request, *args, **kwargs)

    return wrapper


def request_deadline(request: HttpRequest) -> Deadline:
    """Return the request's deadline (``X-Request-Timeout-Ms`` or the default).

    It becomes the current deadline, so a pool checkout waits no longer.
    """
    deadline = deadline_from_header(
        request.headers.get("X-Request-Timeout-Ms"),
        default_ms=settings.REQUEST_DEADLINE_MS,
        max_ms=settings.REQUEST_DEADLINE_MAX_MS,
    )
    activate(deadline)
    return deadline


def bad_request(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    """JSON 400 for requests Django rejects before any view (bad Host, bad body)."""
    if isinstance(exception, DisallowedHost):
        # Django's message names the host and hints at ALLOWED_HOSTS: not for clients.
        return JsonResponse({"error": "invalid Host header"}, status=400)
    return JsonResponse({"error": "bad request"}, status=400)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """JSON 404 for unknown paths."""
    return JsonResponse({"error": "not found", "path": request.path}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    """JSON 500: a bug on our side; the details are in the log, not the response."""
    return JsonResponse({"error": "internal server error"}, status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """JSON 403 for CSRF failures (``CSRF_FAILURE_VIEW``)."""
    return JsonResponse(
        {"error": "CSRF verification failed", "reason": reason}, status=403
    )
