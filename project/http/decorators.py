"""Decorators for the JSON views."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .errors import ApiError, error_response


def json_get(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Allow only GET/HEAD; answer anything else with a JSON 405.

    Exempt from CSRF checks: the view never acts on an unsafe method, and a 403
    about cookies would hide the real answer (405).
    """

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return error_response(
                ApiError(
                    f"method {request.method} not allowed",
                    status=405,
                    headers={"Allow": "GET, HEAD"},
                    allowed=["GET"],
                )
            )
        return view(request, *args, **kwargs)

    return wrapper
