"""Settings shared by every environment; the others import these and override."""

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured

from project import embedded_pg
from project.core import fd_budget
from project.core import route_priority as shed_routes
from project.server.admission import limit as shed_limit
from project.server.log_format import log_format
from settings import cores, load_env_file


class Env(environ.Env):
    """``environ.Env`` where an empty value means unset.

    ``KEY=`` (as in .env.template) then keeps the default instead of becoming
    ``False``, ``[]`` or a ValueError.
    """

    def get_value(
        self,
        var: str,
        cast: Any = None,
        default: Any = environ.Env.NOTSET,
        parse_default: bool = False,
    ) -> Any:
        """Return the default for a variable that is set but empty."""
        if default is not self.NOTSET and self.ENVIRON.get(self.prefix + var) == "":
            return default
        return super().get_value(
            var, cast=cast, default=default, parse_default=parse_default
        )


BASE_DIR = Path(__file__).resolve().parent.parent
load_env_file()
env = Env()

# General
DEBUG = env.bool("DEBUG", default=False)
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
USE_TZ = True
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

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
WORKER_CONNECTIONS = env.int("WORKER_CONNECTIONS", default=1000)

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


def _pool_share() -> int:
    """Processes sharing the database's connection budget: workers per host × hosts."""
    workers = env.int("WEB_CONCURRENCY", default=0) or cores()
    return workers * max(1, env.int("DB_HOSTS", default=1))


def database_settings(embedded_data_dir: Path) -> tuple[dict, str | None]:
    """Return ``(DATABASES["default"], embedded data dir or None)``.

    ``DATABASE_URL`` unset or empty selects the embedded cluster in
    ``embedded_data_dir``. Connections come from a bounded pool per worker
    (``project.core.pg_pool``): ``CONN_MAX_AGE=0`` hands a greenlet's connection
    back to the pool when its request or leg ends, and requests are not wrapped
    in a transaction, which would hold a connection for the whole request.
    """
    url = env.str("DATABASE_URL", default="").strip()
    embedded = None
    if not url:
        embedded = str(embedded_data_dir)
        url = embedded_pg.url(embedded_data_dir)
    try:
        db = env.db_url_config(url)
    except ValueError as exc:  # a port that is not a number from 0 to 65535
        raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
    db["HOST"] = unquote(db.get("HOST", ""))  # unix socket paths arrive %-encoded
    # Unset: sized from the database's budget when the first connection opens.
    pool_size = env.int("DB_POOL_SIZE", default=-1)
    if pool_size != 0:
        db["ENGINE"] = "project.core.pg_pool"
        db["CONN_MAX_AGE"] = 0
    else:
        # No pool: Django's own backend. Only for threaded workers (baselines);
        # under gevent, CONN_MAX_AGE > 0 keeps one connection per greenlet ever run.
        db["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
    db["ATOMIC_REQUESTS"] = False
    # Behind PgBouncer in transaction mode a cursor cannot outlive its transaction.
    db["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DB_DISABLE_SERVER_SIDE_CURSORS", default=False
    )
    options = db.setdefault("OPTIONS", {})
    options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=5))
    options.setdefault(
        "application_name", env.str("DB_APPLICATION_NAME", default="gevent-django")
    )
    if pool_size != 0:
        options.update(_pool_options(pool_size))
    options["options"] = _server_options()
    return db, embedded


def _pool_options(pool_size: int) -> dict:
    """The pool's ``OPTIONS`` (``project.core.pg_pool``); ``pool_size`` < 0: unset."""
    return {
        "pool_size": pool_size if pool_size > 0 else None,
        "pool_share": _pool_share(),
        "pool_reserve": env.int("DB_RESERVED_CONNECTIONS", default=10),
        # Unset: a checkout waits as long as its request's deadline allows.
        "pool_timeout": env.float("DB_POOL_TIMEOUT", default=None),
        "pool_max_waiting": env.int(
            "DB_POOL_MAX_WAITING", default=10 * WORKER_CONNECTIONS
        ),
        "pool_check_idle_after": env.float("DB_POOL_CHECK_IDLE_S", default=30.0),
        "pool_max_lifetime": env.float("DB_POOL_MAX_LIFETIME_S", default=3600.0),
        "pool_max_idle": env.float("DB_POOL_MAX_IDLE_S", default=600.0),
        "pool_min_idle": env.int("DB_POOL_MIN_IDLE", default=2),
    }


def _server_options() -> str:
    """Server-side settings of every connection, as libpq's ``options`` string."""
    server_options = {
        "statement_timeout": env.int("DB_STATEMENT_TIMEOUT_MS", default=30000),
        "idle_in_transaction_session_timeout": env.int(
            "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default=60000
        ),
        "lock_timeout": env.int("DB_LOCK_TIMEOUT_MS", default=10000),
        # Matches TIME_ZONE, so Django never spends a SET on a fresh connection.
        "TimeZone": "UTC",
    }
    return " ".join(f"-c {key}={value}" for key, value in server_options.items())


_default_db, EMBEDDED_PG_DATA_DIR = database_settings(embedded_pg.DEV_DATA_DIR)
DATABASES = {"default": _default_db}

# Logging: everything to stderr, where gunicorn's capture_output collects it.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# plain: one line of text per record; json: one JSON object per line (gunicorn's
# own and access lines too, project/server/access_log.py). Both name the request.
try:
    LOG_FORMAT = log_format({"LOG_FORMAT": env.str("LOG_FORMAT", default="plain")})
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from exc
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

# IO toolkit (project/core)
# Connections per upstream per worker, at most; beyond it calls wait (within
# their timeout) for a free one. Unset: one per concurrent request
# (WORKER_CONNECTIONS), less when the file-descriptor limit would not hold it
# (project/core/fd_budget.py). A bound, not 10 x that: it is also the bulkhead
# that keeps one slow upstream from taking every descriptor of the worker.
HTTP_POOL_MAXSIZE = env.int(
    "HTTP_POOL_MAXSIZE",
    default=fd_budget.default_http_pool_size(WORKER_CONNECTIONS),
)
# Pooled connections idle this long are closed (an upstream closes its side
# sooner or later anyway, and a burst must not pin sockets for good).
HTTP_POOL_IDLE_S = env.float("HTTP_POOL_IDLE_S", default=30.0)
# What an upstream answer may send before its body; crossing a limit fails the
# call at once ("upstream headers too large") and closes the connection.
HTTP_MAX_HEADER_BYTES = env.int("HTTP_MAX_HEADER_BYTES", default=64 * 1024)
HTTP_MAX_HEADERS = env.int("HTTP_MAX_HEADERS", default=100)
HTTP_MAX_STATUS_LINE_BYTES = env.int("HTTP_MAX_STATUS_LINE_BYTES", default=8 * 1024)
HTTP_MAX_INTERIM_RESPONSES = env.int("HTTP_MAX_INTERIM_RESPONSES", default=5)
HTTP_CONNECT_TIMEOUT_S = env.float("HTTP_CONNECT_TIMEOUT_S", default=2.0)
# How long an upstream's resolved address is reused for new connections.
HTTP_DNS_TTL_S = env.float("HTTP_DNS_TTL_S", default=30.0)
# An upstream answer is held in memory whole; a runaway body must not take the worker.
HTTP_MAX_BODY_BYTES = env.int("HTTP_MAX_BODY_BYTES", default=10 * 1024 * 1024)
FANOUT_MAX_CONCURRENCY = env.int("FANOUT_MAX_CONCURRENCY", default=100)
REQUEST_DEADLINE_MS = env.int("REQUEST_DEADLINE_MS", default=15000)
REQUEST_DEADLINE_MAX_MS = env.int("REQUEST_DEADLINE_MAX_MS", default=60000)

# Admission control (project/core/admission): each gunicorn worker runs at most
# an adaptive number of requests at once and refuses the excess at once with a
# 503 (Retry-After), before Django sees it. While the event loop is busier than
# SHED_CPU_TARGET the limit is capped at three times what the routes need; it falls
# (never below the pool's size) when the database pool's line grows past
# SHED_POOL_WAIT_TARGET_MS, and grows back otherwise.
SHED_ENABLED = env.bool("SHED_ENABLED", default=True)
# prefix=priority (exempt, critical, normal, sheddable); longest prefix wins.
SHED_ROUTES = env.str("SHED_ROUTES", default=shed_routes.DEFAULT_ROUTES)
SHED_CPU_TARGET = env.float("SHED_CPU_TARGET", default=0.85)
SHED_POOL_WAIT_TARGET_MS = env.int("SHED_POOL_WAIT_TARGET_MS", default=20)
# Longest wait for a slot; once a wait has run out, waits are cut to
# SHED_QUEUE_TARGET_MS (CoDel) and sheddable routes do not wait.
SHED_QUEUE_TIMEOUT_MS = env.int("SHED_QUEUE_TIMEOUT_MS", default=100)
SHED_QUEUE_TARGET_MS = env.int("SHED_QUEUE_TARGET_MS", default=5)
SHED_MIN_LIMIT = env.int("SHED_MIN_LIMIT", default=4)
# 0: WORKER_CONNECTIONS (the limit starts there).
SHED_MAX_LIMIT = env.int("SHED_MAX_LIMIT", default=0)
SHED_RETRY_AFTER_S = env.int("SHED_RETRY_AFTER_S", default=1)
try:
    shed_routes.RoutePriorities.parse(SHED_ROUTES)
    shed_limit.LimitConfig(
        minimum=SHED_MIN_LIMIT, maximum=SHED_MAX_LIMIT or WORKER_CONNECTIONS
    )
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None
for _name, _value, _low, _high in (
    ("SHED_CPU_TARGET", SHED_CPU_TARGET, 0.1, 1.0),
    ("SHED_POOL_WAIT_TARGET_MS", SHED_POOL_WAIT_TARGET_MS, 1, 60000),
    ("SHED_QUEUE_TIMEOUT_MS", SHED_QUEUE_TIMEOUT_MS, 0, 60000),
    ("SHED_QUEUE_TARGET_MS", SHED_QUEUE_TARGET_MS, 0, SHED_QUEUE_TIMEOUT_MS),
    ("SHED_RETRY_AFTER_S", SHED_RETRY_AFTER_S, 0, 3600),
):
    if not _low <= _value <= _high:
        raise ImproperlyConfigured(
            f"{_name} must be from {_low} to {_high}, got {_value}"
        )

# Per-worker in-memory cache: aggregation sources with cache_ttl_s keep their
# last good value here (fresh hits, and stale-if-error fallbacks). Every cache
# here stores JSON, never pickles (project/core/cache_codec.py): whoever can
# write to a cache must not get code run by the service.
CACHES = {
    "default": {
        # Bounded in bytes too: LocMemCache alone counts only entries.
        "BACKEND": "project.core.bounded_cache.ByteBoundedLocMemCache",
        "OPTIONS": {
            "MAX_ENTRIES": 10000,
            "MAX_BYTES": env.int("CACHE_MAX_BYTES", default=64 * 1024 * 1024),
            "MAX_ENTRY_BYTES": env.int("CACHE_MAX_ENTRY_BYTES", default=1024 * 1024),
        },
    }
}

# Shared cache: Redis, off unless REDIS_URL is set. Every Redis call (connect
# and each command) gives up after REDIS_TIMEOUT_MS; a failed call is served
# from this worker's memory and Redis is skipped for a short cool-off
# (project/core/fallback_cache.py), so a dead Redis never stalls requests.
REDIS_URL = env.str("REDIS_URL", default="").strip()
REDIS_TIMEOUT_MS_DEFAULT = 100
try:
    REDIS_TIMEOUT_MS = env.int("REDIS_TIMEOUT_MS", default=REDIS_TIMEOUT_MS_DEFAULT)
except ValueError:
    raise ImproperlyConfigured("REDIS_TIMEOUT_MS must be a whole number") from None
if not 1 <= REDIS_TIMEOUT_MS <= 60000:
    raise ImproperlyConfigured(
        f"REDIS_TIMEOUT_MS must be from 1 to 60000, got {REDIS_TIMEOUT_MS}"
    )
# A worker's Redis connections: a cache call holds one for well under a
# millisecond, so a few dozen serve thousands of concurrent requests, and
# workers x hosts x this must stay under Redis's maxclients (10,000). A call
# that finds them all busy waits up to REDIS_TIMEOUT_MS, then falls back.
REDIS_MAX_CONNECTIONS_DEFAULT = 32
try:
    REDIS_MAX_CONNECTIONS = env.int(
        "REDIS_MAX_CONNECTIONS", default=REDIS_MAX_CONNECTIONS_DEFAULT
    )
except ValueError:
    raise ImproperlyConfigured("REDIS_MAX_CONNECTIONS must be a whole number") from None
if not 1 <= REDIS_MAX_CONNECTIONS <= 10000:
    raise ImproperlyConfigured(
        f"REDIS_MAX_CONNECTIONS must be from 1 to 10000, got {REDIS_MAX_CONNECTIONS}"
    )
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        "REDIS_URL must start with redis://, rediss:// or unix://"
    )


def shared_cache(
    url: str,
    timeout_ms: int = REDIS_TIMEOUT_MS_DEFAULT,
    *,
    name: str = "shared",
    cool_off_s: float = 2.0,
    max_connections: int = REDIS_MAX_CONNECTIONS_DEFAULT,
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
    CACHES["shared"] = shared_cache(
        REDIS_URL, REDIS_TIMEOUT_MS, max_connections=REDIS_MAX_CONNECTIONS
    )

# Aggregation API (/api/aggregate/<name>/)
# Development and tests default to the worked example; production requires
# its own file (settings/production.py).
AGGREGATIONS_FILE = env.str(
    "AGGREGATIONS_FILE", default=str(BASE_DIR / "examples" / "aggregations.toml")
)
# Bearer tokens accepted by the API (comma-separated); none configured: all 401.
MIN_API_TOKEN_LENGTH = 16


def api_tokens(raw: str, key: str = "AGGREGATION_API_TOKENS") -> list[str]:
    """The comma-separated tokens of setting ``key``, stripped; a stray comma or
    a short token stops the service (it would be unusable or guessable)."""
    if not raw.strip():
        return []
    tokens = [token.strip() for token in raw.split(",")]
    if not all(tokens):
        raise ImproperlyConfigured(f"{key} has an empty token (a stray comma?)")
    if any(len(token) < MIN_API_TOKEN_LENGTH for token in tokens):
        raise ImproperlyConfigured(
            f"{key}: every token needs at least {MIN_API_TOKEN_LENGTH} characters"
        )
    return tokens


AGGREGATION_API_TOKENS = api_tokens(env.str("AGGREGATION_API_TOKENS", default=""))
# Sources stop this long before the deadline, leaving time for stale fallbacks
# and the response.
AGGREGATION_DEADLINE_MARGIN_MS = env.int("AGGREGATION_DEADLINE_MARGIN_MS", default=10)
# With REDIS_URL, every worker and host shares one cache ("shared").
AGGREGATION_CACHE = env.str(
    "AGGREGATION_CACHE", default="shared" if REDIS_URL else "default"
)
if AGGREGATION_CACHE not in CACHES:
    raise ImproperlyConfigured(
        f"AGGREGATION_CACHE {AGGREGATION_CACHE!r} is not a cache alias "
        f"({', '.join(CACHES)}; 'shared' needs REDIS_URL)"
    )

# Observability (/metrics, request metrics, the event loop's health)
# false: no request metrics, no event-loop monitor (the toolkit reads it too).
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)


def allow_ips(raw: str) -> list[IPv4Network | IPv6Network]:
    """The comma-separated addresses or CIDR blocks of ``METRICS_ALLOW_IPS``;
    one that does not parse stops the service (it would lock scrapers out)."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"METRICS_ALLOW_IPS: {exc}") from exc
    return networks


# Who may read /metrics: a bearer token, or a client address (REMOTE_ADDR, never
# a forwarded header). Development and tests: loopback; production: nobody
# unless one of the two is set (settings/production.py).
METRICS_TOKENS = api_tokens(env.str("METRICS_TOKENS", default=""), "METRICS_TOKENS")
METRICS_ALLOW_IPS = allow_ips(env.str("METRICS_ALLOW_IPS", default="127.0.0.1,::1"))
# gevent's monitor thread reports a greenlet holding the loop this long
# (seconds; 0: no monitor thread).
GEVENT_MAX_BLOCKING_TIME = env.float("GEVENT_MAX_BLOCKING_TIME", default=0.1)

# Reference endpoints (capacity probes)
DEMO_ENDPOINTS = env.bool("DEMO_ENDPOINTS", default=True)
DEMO_MAX_LEGS = env.int("DEMO_MAX_LEGS", default=100)
DEMO_MAX_MS = env.int("DEMO_MAX_MS", default=10000)
DEMO_MAX_X = env.int("DEMO_MAX_X", default=1_000_000_000)


def _own_base_url() -> str:
    """Return this server's base URL from its bind address, never a Host header."""
    host, _, port = env.str("BIND", default="127.0.0.1:8000").rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/demo"


DEMO_UPSTREAM_URL = (
    env.str("DEMO_UPSTREAM_URL", default="").rstrip("/") or _own_base_url()
)
