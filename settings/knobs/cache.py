"""Caches: each worker's memory, and Redis shared by every worker and host."""

from . import checks
from .knob import Kind, Knob

KNOBS = (
    Knob(
        "CACHE_MAX_BYTES",
        Kind.INTEGER,
        "Most bytes (of JSON) the per-worker cache holds, and the memory the "
        "shared cache falls back to; least recently used entries are evicted "
        "to stay under it.",
        default=64 * 1024 * 1024,
        low=0,
    ),
    Knob(
        "REDIS_URL",
        Kind.STRING,
        "`redis://host:6379/0` (`rediss://` for TLS, `unix://` for a socket): "
        'makes `CACHES["shared"]` (values stored as JSON, served from the '
        "worker's memory while Redis fails) the aggregation cache of every "
        "worker and host. Any other scheme stops the service.",
        default_doc="empty: no Redis",
        check=checks.redis_url,
    ),
)
