"""gunicorn's logger (``logger_class`` in gunicorn.conf.py): request ids, JSON.

Django-free (the master imports it). With ``LOG_FORMAT=json`` gunicorn's own
lines and the access log are one JSON object per line, like the app's
(``project/server/log_format.py``). In both formats an access line names the request
id (from the answer's ``X-Request-ID``) and requests for the metrics endpoint
are not logged: scraped every few seconds, they would drown the requests.
"""

import ipaddress
import time
import traceback
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from project.core.request_context import ROUTE_KEY, SOURCES_KEY
from project.server.log_format import JsonFormatter, iso_time, json_line, log_format

# Paths whose requests the access log leaves out.
UNLOGGED_PATHS = frozenset({"/metrics", "/metrics/"})


def _response_header(resp: Any, name: str) -> str | None:
    for key, value in resp.headers:
        if key.lower() == name:
            return value
    return None


def _trusted(address: str, proxies: Sequence[str]) -> bool:
    if "*" in proxies:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a unix socket peer, or nothing
    for proxy in proxies:
        try:
            if ip in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(environ: dict[str, Any], proxies: Sequence[str] = ()) -> str:
    """The address to log as the client's: the last ``X-Forwarded-For`` entry
    when the peer is a trusted proxy (gunicorn's ``forwarded_allow_ips``), else
    the peer (``REMOTE_ADDR``).

    The last entry is the one our proxy added (nginx's ``$remote_addr``, the
    address it was connected from); anything before it came from the client
    and could be made up. Logging only: ``REMOTE_ADDR`` stays the peer, so
    nothing that authorises by address (``METRICS_ALLOW_IPS``) trusts a header.
    """
    peer = environ.get("REMOTE_ADDR") or "-"
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if not forwarded or not _trusted(peer, proxies):
        return peer
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last or peer


def access_fields(
    resp: Any,
    environ: dict[str, Any],
    request_time: timedelta,
    now: float,
    proxies: Sequence[str] = (),
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
        "remote_addr": client_address(environ, proxies),
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
        self.proxies: list[str] = list(cfg.forwarded_allow_ips or ())
        self.json = log_format() == "json"
        if self.json:
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())

    def atoms(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        """gunicorn's fields of a plain access line, ``%(h)s`` being the client
        behind a trusted proxy (``client_address``)."""
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["h"] = client_address(environ, getattr(self, "proxies", ()))
        return atoms

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
            fields = access_fields(
                resp, environ, request_time, time.time(), self.proxies
            )
            line = json_line(fields)
            self.access_log.info(line)
        except Exception:
            self.error(traceback.format_exc())
