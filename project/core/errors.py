"""The one error type the API raises; rendered as JSON by ``ApiErrorMiddleware``."""

from typing import Any


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
