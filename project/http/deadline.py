"""A request's deadline from its ``X-Request-Timeout-Ms`` header."""

from django.conf import settings
from django.http import HttpRequest

from project.core.deadline import (
    DEADLINE_HEADER,
    MAX_DEADLINE_MS,
    Deadline,
    activate,
    arrival,
)

from .errors import ApiError
from .params import strict_int


def deadline_from_header(
    value: str | None, *, default_ms: int, max_ms: int
) -> Deadline:
    """Build a request's deadline from ``X-Request-Timeout-Ms`` (or the default).

    A client may shorten its deadline up to ``max_ms``; anything that is not a
    positive integer is a 400 naming the header.
    """
    if value is None or value.strip() == "":
        return Deadline.from_ms(default_ms, started=arrival())
    ms = strict_int(value)
    if ms is None or not 0 < ms <= max_ms:
        raise ApiError(
            f"{DEADLINE_HEADER} must be an integer between 1 and {max_ms}",
            param=DEADLINE_HEADER,
        )
    return Deadline.from_ms(ms, started=arrival())


def request_deadline(request: HttpRequest) -> Deadline:
    """Return the request's deadline (``X-Request-Timeout-Ms`` or the default).

    It becomes the current deadline, so a pool checkout waits no longer.
    """
    deadline = deadline_from_header(
        request.headers.get(DEADLINE_HEADER),
        default_ms=settings.REQUEST_DEADLINE_MS,
        max_ms=MAX_DEADLINE_MS,
    )
    activate(deadline)
    return deadline
