"""The one error type the API raises, and the one place errors become JSON."""

from typing import Any

from django.http import JsonResponse


class ApiError(Exception):
    """A client-visible error: an HTTP status, a message and extra JSON fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON body: ``{"error": message, **extra}``."""
        return {"error": self.message, **self.extra}


def error_response(error: ApiError) -> JsonResponse:
    """The JSON answer for ``error``: its body, status and headers.

    Every error answer of the service is rendered here (views, middleware,
    Django's error handlers), so they all have the same shape.
    """
    return JsonResponse(error.as_dict(), status=error.status, headers=error.headers)
