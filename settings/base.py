"""Settings shared by every environment; the others import these and override.

What an operator may set comes from the table in ``settings/knobs/`` (read
once, below); everything else here is fixed, with its reason.
"""

import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured

from project import embedded_pg
from project.core import fd_budget
from settings import cores, knobs, load_env_file


def read_knobs(*, production: bool = False) -> dict[str, Any]:
    """The table's values from the environment; a wrong one stops the service."""
    try:
        return knobs.read(os.environ, production=production)
    except knobs.KnobError as error:
        raise ImproperlyConfigured(str(error)) from None


BASE_DIR = Path(__file__).resolve().parent.parent
load_env_file()
KNOBS = read_knobs()

# General
DEBUG = False
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
USE_TZ = True
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = KNOBS["ALLOWED_HOSTS"]

# Apps: no admin, sessions or auth; the service is an API of IO-bound endpoints.
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "project.core.apps.CoreConfig",
    "project.observability",
    "project.health",
    "project.demo",
    "project.example",
    "project.aggregation",
]
CSRF_FAILURE_VIEW = "project.http.handlers.csrf_failure"
# Concurrent requests (greenlets) per worker; gunicorn.conf.py reads the same key.
WORKER_CONNECTIONS = KNOBS["WORKER_CONNECTIONS"]

MIDDLEWARE = [
    # First: it times and counts every answer, the other middleware's included.
    "project.observability.middleware.RequestMetricsMiddleware",
    "project.http.middleware.RequestIdMiddleware",
    "project.http.middleware.CallerMiddleware",
    "project.http.middleware.RefuseRequestBodyMiddleware",
    "project.http.middleware.RequestDeadlineMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "project.http.middleware.ApiErrorMiddleware",
]

# Seconds to open a database connection (?connect_timeout= on the URL wins).
DB_CONNECT_TIMEOUT_S = 5
# Shows in pg_stat_activity (?application_name= on the URL wins).
DB_APPLICATION_NAME = "gevent-django"
# The pool's options (project.core.pg_pool.pools) beyond its size.
DB_POOL_OPTIONS = {
    # Connections left out of the database's budget for everything else
    # (migrations, psql, monitoring).
    "pool_reserve": 10,
    # None: a checkout waits in line (first come, first served) for as long as
    # its request's deadline allows, then 503 + Retry-After.
    "pool_timeout": None,
    # A pooled connection idle longer than this is checked (SELECT 1) before
    # reuse; fresher ones cost no extra round trip.
    "pool_check_idle_after": 30.0,
    # Connections are closed (when idle, never mid-transaction) after this many
    # seconds, up to 5 % earlier so they do not all go at once.
    "pool_max_lifetime": 3600.0,
    # Idle connections beyond pool_min_idle are closed after this many seconds.
    "pool_max_idle": 600.0,
    "pool_min_idle": 2,
}
# Checkouts that may queue per worker, per concurrent request: fan-out legs
# queue too, hence more than one; beyond it an immediate 503.
DB_POOL_WAITING_PER_CONNECTION = 10
# Server-side backstops on every connection (a request's own deadline is tighter).
DB_SERVER_OPTIONS = {
    "idle_in_transaction_session_timeout": 60000,
    "lock_timeout": 10000,
    # Matches TIME_ZONE, so Django never spends a SET on a fresh connection.
    "TimeZone": "UTC",
}


def _url_flag(value: Any) -> bool:
    """A boolean from a URL's query (django-environ leaves it a string)."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def database_settings(
    embedded_data_dir: Path, values: dict[str, Any] | None = None
) -> tuple[dict, str | None]:
    """Return ``(DATABASES["default"], embedded data dir or None)`` from the
    table's ``values`` (default: this module's ``KNOBS``).

    ``DATABASE_URL`` unset or empty selects the embedded cluster in
    ``embedded_data_dir``. Connections come from a bounded pool per worker
    (``project.core.pg_pool``): ``CONN_MAX_AGE=0`` hands a greenlet's connection
    back to the pool when its request or leg ends, and requests are not wrapped
    in a transaction, which would hold a connection for the whole request.
    """
    values = KNOBS if values is None else values
    url = (values["DATABASE_URL"] or "").strip()
    embedded = None
    if not url:
        embedded = str(embedded_data_dir)
        url = embedded_pg.url(embedded_data_dir)
    try:
        db = environ.Env.db_url_config(url)
    except ValueError as exc:  # a port that is not a number from 0 to 65535
        raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
    db["HOST"] = unquote(db.get("HOST", ""))  # unix socket paths arrive %-encoded
    # Unset: sized from the database's budget when the first connection opens.
    pool_size = values["DB_POOL_SIZE"]
    if pool_size != 0:
        db["ENGINE"] = "project.core.pg_pool"
        db["CONN_MAX_AGE"] = 0
    else:
        # No pool: Django's own backend. Only for threaded workers (baselines);
        # under gevent, CONN_MAX_AGE > 0 keeps one connection per greenlet ever run.
        db["CONN_MAX_AGE"] = int(db.get("CONN_MAX_AGE", 0))
    db["ATOMIC_REQUESTS"] = False
    # Behind PgBouncer in transaction mode a cursor cannot outlive its transaction.
    db["DISABLE_SERVER_SIDE_CURSORS"] = _url_flag(
        db.get("DISABLE_SERVER_SIDE_CURSORS", False)
    )
    options = db.setdefault("OPTIONS", {})
    options.setdefault("connect_timeout", DB_CONNECT_TIMEOUT_S)
    options.setdefault("application_name", DB_APPLICATION_NAME)
    if pool_size != 0:
        options.update(
            DB_POOL_OPTIONS,
            pool_size=pool_size,
            pool_share=values["WEB_CONCURRENCY"] or cores(),
            pool_max_waiting=DB_POOL_WAITING_PER_CONNECTION
            * values["WORKER_CONNECTIONS"],
        )
    server_options = {
        "statement_timeout": values["DB_STATEMENT_TIMEOUT_MS"],
        **DB_SERVER_OPTIONS,
    }
    options["options"] = " ".join(
        f"-c {key}={value}" for key, value in server_options.items()
    )
    return db, embedded


if os.environ.get("DJANGO_SETTINGS_MODULE") == "settings.production":
    # Production's required keys, checked before the embedded default below
    # makes a password file: on a read-only root filesystem (the image) that
    # write failed first, with an OSError naming no setting.
    read_knobs(production=True)
_default_db, EMBEDDED_PG_DATA_DIR = database_settings(embedded_pg.DEV_DATA_DIR)
DATABASES = {"default": _default_db}

# Logging: everything to stderr, where gunicorn's capture_output collects it.
LOG_LEVEL = KNOBS["LOG_LEVEL"].upper()
LOG_FORMAT = KNOBS["LOG_FORMAT"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s [%(process)d] %(name)s"
            " rid=%(request_id)s: %(message)s"
        },
        "json": {"()": "project.server.log_format.JsonFormatter"},
    },
    # The request-id filter sits on the handler so records of every logger get it.
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    # Django's default console handler (DEBUG only) would print its records a
    # second time, unformatted; they reach stderr through the root instead.
    "loggers": {
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        # A bad Host is the client's error: one rate-limited WARNING line, no
        # traceback (project/server/log_filters.py).
        "django.security.DisallowedHost": {"filters": ["client_error"]},
    },
    "filters": {
        "client_error": {"()": "project.server.log_filters.ClientErrorFilter"},
        "request_id": {"()": "project.server.log_filters.RequestIdFilter"},
    },
}

# IO toolkit (project/core): connections per upstream per worker.
HTTP_POOL_MAXSIZE = KNOBS["HTTP_POOL_MAXSIZE"] or fd_budget.default_http_pool_size(
    WORKER_CONNECTIONS
)
HTTP_POOL_IDLE_S = KNOBS["HTTP_POOL_IDLE_S"]
REQUEST_DEADLINE_MS = KNOBS["REQUEST_DEADLINE_MS"]

# Admission control (project/server/admission).
SHED_ENABLED = KNOBS["SHED_ENABLED"]
SHED_ROUTES = KNOBS["SHED_ROUTES"]
# 0: the worker's connections (gunicorn's worker_connections).
SHED_MAX_LIMIT = KNOBS["SHED_MAX_LIMIT"] or 0
SHED_QUEUE_TIMEOUT_MS = KNOBS["SHED_QUEUE_TIMEOUT_MS"]

# Per-worker in-memory cache: aggregation sources with cache_ttl_s keep their
# last good value here (fresh hits, and stale-if-error fallbacks). Every cache
# here stores JSON, never pickles (project/core/cache_codec.py): whoever can
# write to a cache must not get code run by the service.
CACHES = {
    "default": {
        # Bounded in bytes too: LocMemCache alone counts only entries.
        "BACKEND": "project.core.bounded_cache.ByteBoundedLocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 10000, "MAX_BYTES": KNOBS["CACHE_MAX_BYTES"]},
    }
}

# Shared cache: Redis, off unless REDIS_URL is set. Every Redis call (connect
# and each command) gives up after REDIS_TIMEOUT_MS; a failed call is served
# from this worker's memory and Redis is skipped for a short cool-off
# (project/core/fallback_cache.py), so a dead Redis never stalls requests.
REDIS_URL = KNOBS["REDIS_URL"] or ""
REDIS_TIMEOUT_MS = 100
# A worker's Redis connections: a cache call holds one for well under a
# millisecond, so a few dozen serve thousands of concurrent requests, and
# workers x hosts x this must stay under Redis's maxclients (10,000). A call
# that finds them all busy waits up to REDIS_TIMEOUT_MS, then falls back.
REDIS_MAX_CONNECTIONS = 32


def shared_cache(
    url: str,
    timeout_ms: int = REDIS_TIMEOUT_MS,
    *,
    name: str = "shared",
    cool_off_s: float = 2.0,
    max_connections: int = REDIS_MAX_CONNECTIONS,
) -> dict:
    """The ``CACHES`` entry of a Redis cache at ``url`` that falls back to memory.

    Its connection pool blocks (``BlockingConnectionPool``) at
    ``max_connections`` for up to the timeout, instead of opening one more
    connection per concurrent request as redis-py's default pool does.
    """
    timeout_s = timeout_ms / 1000.0
    return {
        "BACKEND": "project.core.fallback_cache.FallbackCache",
        "LOCATION": name,
        "OPTIONS": {
            "PRIMARY": {
                "BACKEND": "project.core.redis_cache.JsonRedisCache",
                "LOCATION": url,
                "OPTIONS": {
                    "socket_connect_timeout": timeout_s,
                    "socket_timeout": timeout_s,
                    "pool_class": "redis.BlockingConnectionPool",
                    "max_connections": max_connections,
                    "timeout": timeout_s,  # the wait for a free connection
                },
            },
            "FALLBACK": {
                "BACKEND": "project.core.bounded_cache.ByteBoundedLocMemCache",
                "LOCATION": f"fallback-{name}",
                "OPTIONS": CACHES["default"]["OPTIONS"],
            },
            "COOL_OFF_S": cool_off_s,
        },
    }


if REDIS_URL:
    CACHES["shared"] = shared_cache(REDIS_URL)

# Aggregation API (/api/aggregate/<name>/)
# Development and tests default to the worked example; production requires
# its own file (settings/production.py).
AGGREGATIONS_FILE = KNOBS["AGGREGATIONS_FILE"] or str(
    BASE_DIR / "examples" / "aggregations.toml"
)
AGGREGATION_API_TOKENS = KNOBS["AGGREGATION_API_TOKENS"]
# With REDIS_URL, every worker and host shares one cache ("shared").
AGGREGATION_CACHE = "shared" if REDIS_URL else "default"

# Observability (/metrics, request metrics, the event loop's health)
# false: no request metrics, no event-loop monitor (the toolkit reads it too).
METRICS_ENABLED = KNOBS["METRICS_ENABLED"]
# Who may read /metrics: a bearer token, or a client address (REMOTE_ADDR, never
# a forwarded header). Development and tests: loopback; production: nobody
# unless one of the two is set (settings/production.py).
METRICS_TOKENS = KNOBS["METRICS_TOKENS"]


def networks(items: list[str]) -> list[IPv4Network | IPv6Network]:
    """``METRICS_ALLOW_IPS``' addresses and blocks (the table checked they parse)."""
    return [ip_network(item, strict=False) for item in items]


METRICS_ALLOW_IPS = networks(KNOBS["METRICS_ALLOW_IPS"])

# Reference endpoints (capacity probes)
DEMO_ENDPOINTS = KNOBS["DEMO_ENDPOINTS"]


def _own_base_url() -> str:
    """Return this server's base URL from its bind address, never a Host header."""
    host, _, port = KNOBS["BIND"].rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/demo"


DEMO_UPSTREAM_URL = (KNOBS["DEMO_UPSTREAM_URL"] or "").rstrip("/") or _own_base_url()
