"""gunicorn's logger (``logger_class`` in gunicorn.conf.py): request ids, JSON.

Django-free (the master imports it). With ``LOG_FORMAT=json`` gunicorn's own
lines and the access log are one JSON object per line, like the app's
(``project/log_format.py``). In both formats an access line names the request
id (from the answer's ``X-Request-ID``) and requests for the metrics endpoint
are not logged: scraped every few seconds, they would drown the requests.
"""

import time
import traceback
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from project.log_format import JsonFormatter, iso_time, json_line, log_format

# Paths whose requests the access log leaves out.
UNLOGGED_PATHS = frozenset({"/metrics", "/metrics/"})
# What the Django side leaves in the environ (project/http/middleware.py).
ROUTE_KEY = "gevent_django.route"
SOURCES_KEY = "gevent_django.sources"


def _response_header(resp: Any, name: str) -> str | None:
    for key, value in resp.headers:
        if key.lower() == name:
            return value
    return None


def access_fields(
    resp: Any, environ: dict[str, Any], request_time: timedelta, now: float
) -> dict[str, Any]:
    """The JSON access line of one answer (``sources``: aggregation API only)."""
    status = resp.status
    fields: dict[str, Any] = {
        "time": iso_time(now),
        "level": "INFO",
        "logger": "gunicorn.access",
        "request_id": _response_header(resp, "x-request-id") or "-",
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO"),
        "route": environ.get(ROUTE_KEY),
        "status": int(status.split(None, 1)[0]) if isinstance(status, str) else status,
        "duration_ms": round(request_time.total_seconds() * 1000.0, 1),
        "bytes": getattr(resp, "sent", None),
        "remote_addr": environ.get("REMOTE_ADDR"),
    }
    sources = environ.get(SOURCES_KEY)
    if sources is not None:
        fields["sources"] = sources
    return fields


class RequestLogger(glogging.Logger):
    """gunicorn's ``Logger`` with JSON lines on demand and no metrics scrapes."""

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup; then, for ``LOG_FORMAT=json``, its lines as JSON."""
        super().setup(cfg)
        self.json = log_format() == "json"
        if self.json:
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())

    def access(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta
    ) -> None:
        """Log one answer, plain or JSON; nothing for the metrics endpoint."""
        if environ.get("PATH_INFO") in UNLOGGED_PATHS or not self.access_log_enabled:
            return
        if not self.json:
            super().access(resp, req, environ, request_time)
            return
        try:
            line = json_line(access_fields(resp, environ, request_time, time.time()))
            self.access_log.info(line)
        except Exception:
            self.error(traceback.format_exc())
