"""LOG_FORMAT, the JSON formatter and the access-log fields (no server needed)."""

import json
import logging
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from project.core.request_context import request_id_scope
from project.server.access_log import (
    ROUTE_KEY,
    SOURCES_KEY,
    access_fields,
    client_address,
)
from project.server.log_format import JsonFormatter, log_format


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "plain"), ("", "plain"), ("plain", "plain"), (" JSON ", "json")],
)
def test_log_format_values(value, expected):
    environ = {} if value is None else {"LOG_FORMAT": value}
    assert log_format(environ) == expected


def test_an_unknown_log_format_is_an_error():
    with pytest.raises(ValueError, match="plain or json"):
        log_format({"LOG_FORMAT": "xml"})


def _record(message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("app.x", logging.ERROR, __file__, 1, message, (), exc_info)


def test_json_formatter_writes_one_object_with_the_request_and_the_traceback():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = _record("failed: %s", sys.exc_info())
    record.args = ("two\nlines",)
    with request_id_scope("rid-json"):
        line = JsonFormatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["message"] == "failed: two\nlines"
    assert (fields["level"], fields["logger"]) == ("ERROR", "app.x")
    assert fields["request_id"] == "rid-json"
    assert fields["time"].endswith("Z")
    assert "ValueError: bad" in fields["exc"]
    assert json.loads(JsonFormatter().format(_record("x")))["request_id"] == "-"


def test_access_fields_of_an_aggregation_answer():
    resp = SimpleNamespace(
        status="200 OK", headers=[("X-Request-ID", "rid-a")], sent=321
    )
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/aggregate/product/",
        "REMOTE_ADDR": "127.0.0.1",
        ROUTE_KEY: "aggregate",
        SOURCES_KEY: {"details": "ok", "reviews": "error"},
    }
    fields = access_fields(resp, environ, timedelta(milliseconds=12.34), 0.0)
    assert fields == {
        "time": "1970-01-01T00:00:00.000Z",
        "level": "INFO",
        "logger": "gunicorn.access",
        "request_id": "rid-a",
        "method": "GET",
        "path": "/api/aggregate/product/",
        "route": "aggregate",
        "status": 200,
        "duration_ms": 12.3,
        "bytes": 321,
        "remote_addr": "127.0.0.1",
        "sources": {"details": "ok", "reviews": "error"},
    }
    resp.headers = []
    del environ[SOURCES_KEY]
    fields = access_fields(resp, environ, timedelta(0), 0.0)
    assert fields["request_id"] == "-" and "sources" not in fields


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "expected"),
    [
        # Behind a trusted proxy: the entry that proxy added (the last one).
        ("127.0.0.1", "127.0.0.2", ["127.0.0.1"], "127.0.0.2"),
        ("127.0.0.1", "203.0.113.9, 127.0.0.2", ["127.0.0.1"], "127.0.0.2"),
        ("10.0.0.5", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.5", "198.51.100.1", ["*"], "198.51.100.1"),
        # An untrusted peer's header is ignored; no header: the peer.
        ("192.0.2.7", "127.0.0.2", ["127.0.0.1"], "192.0.2.7"),
        ("127.0.0.1", "", ["127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", " , ", ["127.0.0.1"], "127.0.0.1"),
    ],
)
def test_client_address(peer, forwarded, proxies, expected):
    """The access log's client: who the trusted proxy saw, never client claims."""
    environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}
    assert client_address(environ, proxies) == expected
