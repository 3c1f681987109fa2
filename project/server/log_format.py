"""``LOG_FORMAT``: log lines as plain text or as one JSON object each.

Stdlib only: Django's ``LOGGING`` and the gunicorn master
(``project/server/access_log.py``) both use it.
"""

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from project.core.request_context import current_request_id

LOG_FORMATS = ("plain", "json")


def log_format(environ: dict[str, str] | None = None) -> str:
    """``LOG_FORMAT`` from ``environ`` (default ``os.environ``): plain or json.

    Anything else is an error at start-up, not a silently different log.
    """
    value = (environ if environ is not None else os.environ).get("LOG_FORMAT") or ""
    value = value.strip().lower() or "plain"
    if value not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be plain or json, got {value!r}")
    return value


def iso_time(timestamp: float) -> str:
    """``timestamp`` as ISO-8601 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_line(fields: dict[str, Any]) -> str:
    """One log line: ``fields`` as compact JSON (anything unknown as its str)."""
    return json.dumps(fields, separators=(",", ":"), default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id,
    pid, and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON (newlines in it escaped)."""
        request_id = getattr(record, "request_id", None) or current_request_id()
        fields: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id or "-",
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json_line(fields)
