"""Logs and metrics: their format, and who may read /metrics."""

from . import checks
from .knob import Kind, Knob

KNOBS = (
    Knob(
        "LOG_LEVEL",
        Kind.STRING,
        "Django's and the app's log level (to stderr).",
        default="INFO",
        choices=("debug", "info", "warning", "error", "critical"),
    ),
    Knob(
        "LOG_FORMAT",
        Kind.STRING,
        "`plain`: text lines, each with `rid=<request id>`; `json`: one JSON "
        "object per line, for the app's logs, gunicorn's own lines and its "
        'access log (see "Request ids and logs" in `docs/observability.md`).',
        default="plain",
        choices=("plain", "json"),
    ),
    Knob(
        "GUNICORN_ACCESS_LOG",
        Kind.STRING,
        "Where gunicorn writes its access log: `-` is stdout; set and empty, "
        "no access log (load tests).",
        default="-",
        empty=None,
        template="-",
    ),
    Knob(
        "METRICS_ENABLED",
        Kind.BOOLEAN,
        "Fill the Prometheus metrics (requests, the database pool, queries, "
        "upstream calls, aggregations, the event-loop monitor). `false` leaves "
        "them empty at no cost on the hot paths, to measure what they cost; "
        "`/metrics` still answers.",
        default=True,
    ),
    Knob(
        "METRICS_TOKENS",
        Kind.LIST,
        "Comma-separated bearer tokens (16+ characters each) that may read `/metrics`.",
        default=[],
        empty_items=False,
        check=checks.tokens,
    ),
    Knob(
        "METRICS_ALLOW_IPS",
        Kind.LIST,
        "Comma-separated addresses or CIDR blocks that may read `/metrics`, "
        "matched against the socket's peer (`REMOTE_ADDR`), never a forwarded "
        "header. In production "
        "`/metrics` is a 404 until this or `METRICS_TOKENS` is set, and only "
        "loopback and private blocks are accepted.",
        default=["127.0.0.1", "::1"],
        production=[],
        check=checks.networks,
    ),
)
