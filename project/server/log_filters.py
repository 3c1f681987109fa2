"""Logging filters: client errors as short warnings, not tracebacks; the
request id on every record."""

import logging
import time

from project.core.request_context import REQUEST_ID_KEY, current_request_id


class ClientErrorFilter(logging.Filter):
    """One WARNING line per client error, at most one every ``interval`` seconds.

    Django logs a request with a disallowed ``Host`` at ERROR with the full
    traceback: 1 KB of log for a 60-byte request, which anyone can send in a
    loop. The client gets its 400 either way; the log keeps one line per
    ``interval`` with how many were suppressed since the last one.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record as a one-line WARNING, or drop it (rate limit)."""
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self.interval
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = record.stack_info = None
        message = record.getMessage().splitlines()[0][:200]
        if self._suppressed:
            message += (
                f" ({self._suppressed} more like it in the last {self.interval:g} s)"
            )
            self._suppressed = 0
        record.msg, record.args = message, None
        return True


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the current request's id, or ``-`` outside one.

    Set on every handler (settings ``LOGGING``), so records of any logger get it,
    fan-out legs' too (``fan_out`` makes the id current in each leg). Django
    logs a 4xx/5xx answer after the middleware has returned, when no id is
    current any more: such a record names its request, whose environ holds it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the id; never drops a record."""
        request_id = current_request_id()
        if request_id is None:
            environ = getattr(getattr(record, "request", None), "META", None)
            if isinstance(environ, dict):
                request_id = environ.get(REQUEST_ID_KEY)
        record.request_id = request_id or "-"
        return True
