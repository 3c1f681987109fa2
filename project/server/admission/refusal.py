"""The canned 503 answers of refused requests, built once per worker.

Written straight to the socket: a refusal costs no Django, no WSGI environ and
no access-log line (the gate's counts and its summary log account for them),
so refusing stays cheap when most requests are refused.
"""

import json

from .gate import DEADLINE, LIMIT, QUEUE

DETAILS = {
    LIMIT: "the server is at its concurrency limit; retry after Retry-After s",
    QUEUE: "no capacity freed within the queue timeout; retry after Retry-After s",
    DEADLINE: "the request's deadline would pass before it could start",
}


def refusal(reason: str, *, retry_after_s: int, close: bool) -> bytes:
    """The whole HTTP/1.1 answer refusing a request for ``reason``."""
    body = json.dumps(
        {"error": "overloaded", "reason": reason, "detail": DETAILS[reason]}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after_s}\r\n"
        f"X-Shed-Reason: {reason}\r\n"
        "Cache-Control: no-store\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class Refusals:
    """Every refusal answer, by reason and whether the connection closes."""

    def __init__(self, retry_after_s: int) -> None:
        self._answers = {
            (reason, close): refusal(reason, retry_after_s=retry_after_s, close=close)
            for reason in DETAILS
            for close in (False, True)
        }

    def answer(self, reason: str, *, close: bool) -> bytes:
        """The bytes to send."""
        return self._answers[(reason, close)]
