"""What the stub's endpoints share: their replies, parameters and exceptions."""

import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from project.http.params import NOT_AN_INTEGER, out_of_range, strict_int

MAX_MS = 60_000

StartResponse = Callable[..., Any]
Query = dict[str, list[str]]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
# An endpoint: (query, environ, start_response) -> body.
Endpoint = Callable[[Query, Environ, StartResponse], Iterable[bytes]]


class AbortConnection(Exception):
    """Raised by the app to make the handler reset the connection, not answer."""


class RawReply(Exception):
    """Raised by the app to write raw bytes to the socket instead of answering."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__("raw reply")
        self.chunks = chunks


class BadParam(Exception):
    """A query parameter is missing or out of range; rendered as a 400."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def int_param(
    query: Query,
    name: str,
    *,
    default: int | None,
    low: int,
    high: int,
) -> int:
    """The integer query parameter ``name`` in ``low..high``; ``BadParam`` if not."""
    values = query.get(name)
    if not values:
        if default is None:
            raise BadParam(name, f"{name} is required")
        return default
    if len(values) > 1:
        raise BadParam(name, f"{name} given more than once")
    value = strict_int(values[0])
    if value is None:
        raise BadParam(name, f"{name} {NOT_AN_INTEGER}, got {values[0]!r}")
    problem = out_of_range(value, low, high)
    if problem:
        raise BadParam(name, f"{name} {problem}, got {value}")
    return value


def json_reply(
    start_response: StartResponse,
    status: int,
    payload: dict[str, Any],
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    """``payload`` as a JSON answer with ``status`` (no body where HTTP allows none)."""
    body = json.dumps(payload).encode()
    # 1xx, 204 and 304 responses must not carry a body (RFC 9110).
    if status < 200 or status in (204, 304):
        body = b""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # e.g. 599: valid on the wire, unknown to the stdlib
        phrase = "Unknown"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(f"{status} {phrase}", headers + list(extra_headers))
    return [body]
