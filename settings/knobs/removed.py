"""Names that were settings, each with what to do instead.

Any of them in the environment (or ``.env``) stops the service at start-up:
a value that would silently do nothing is worse than a refusal.
"""

_POOL = (
    "a measured constant of the pool's options (DB_POOL_OPTIONS in settings/base.py)"
)
_SERVER = (
    "a backstop constant on every connection (DB_SERVER_OPTIONS in settings/base.py)"
)
_GATE = (
    "a measured default of project.server.admission.gate.GateConfig; "
    "SHED_ENABLED=false turns admission control off"
)
_HEADERS = (
    "a constant of project.core.outbound.client.HEADER_LIMITS "
    "(64 KiB, 100 headers, an 8 KiB status line, 5 interim answers)"
)


def _gunicorn(flag: str, where: str) -> str:
    return (
        f"{where} is set in gunicorn.conf.py; pass gunicorn's own {flag} on its "
        "command line or in GUNICORN_CMD_ARGS to change it"
    )


REMOVED: dict[str, str] = {
    "DEBUG": (
        "it follows ENVIRONMENT (on in development, off in test and production; "
        "ENVIRONMENT=test serves without debug pages)"
    ),
    "DB_HOSTS": (
        "when several hosts share the database, set DB_POOL_SIZE so that "
        "workers x hosts x DB_POOL_SIZE fits its max_connections"
    ),
    "DB_CONNECT_TIMEOUT": "5 s; put ?connect_timeout=N on DATABASE_URL",
    "DB_APPLICATION_NAME": (
        "gevent-django; put ?application_name=NAME on DATABASE_URL"
    ),
    "DB_CONN_MAX_AGE": (
        "the pool needs 0; with DB_POOL_SIZE=0 (threaded baseline) put "
        "?conn_max_age=N on DATABASE_URL"
    ),
    "DB_DISABLE_SERVER_SIDE_CURSORS": (
        "put ?disable_server_side_cursors=true on DATABASE_URL (behind PgBouncer "
        "in transaction mode)"
    ),
    "DB_RESERVED_CONNECTIONS": f"10 connections, {_POOL}; or set DB_POOL_SIZE",
    "DB_POOL_TIMEOUT": (
        "a checkout waits as long as its request's deadline allows "
        "(REQUEST_DEADLINE_MS)"
    ),
    "DB_POOL_MAX_WAITING": f"10 x WORKER_CONNECTIONS, {_POOL}",
    "DB_POOL_CHECK_IDLE_S": f"30 s, {_POOL}",
    "DB_POOL_MAX_LIFETIME_S": f"3600 s, {_POOL}",
    "DB_POOL_MAX_IDLE_S": f"600 s, {_POOL}",
    "DB_POOL_MIN_IDLE": f"2, {_POOL}",
    "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": f"60 s, {_SERVER}",
    "DB_LOCK_TIMEOUT_MS": f"10 s, {_SERVER}",
    "HTTP_CONNECT_TIMEOUT_S": (
        "2 s, project.core.outbound.pool.CONNECT_TIMEOUT_S (a call's own timeout "
        "caps it too)"
    ),
    "HTTP_DNS_TTL_S": "30 s, project.core.outbound.pool.DNS_TTL_S",
    "HTTP_MAX_HEADER_BYTES": _HEADERS,
    "HTTP_MAX_HEADERS": _HEADERS,
    "HTTP_MAX_STATUS_LINE_BYTES": _HEADERS,
    "HTTP_MAX_INTERIM_RESPONSES": _HEADERS,
    "HTTP_MAX_BODY_BYTES": (
        "10 MiB, project.core.outbound.client.MAX_BODY_BYTES; a caller passes "
        "max_body_bytes for another bound"
    ),
    "FANOUT_MAX_CONCURRENCY": (
        "100 legs, project.core.fanout.MAX_CONCURRENCY; a caller passes "
        "max_concurrency for another"
    ),
    "REQUEST_DEADLINE_MAX_MS": (
        "60000, project.core.deadline.MAX_DEADLINE_MS (nginx's proxy timeouts "
        "in deploy/ sit above it)"
    ),
    "SHED_CPU_TARGET": f"0.85, {_GATE}",
    "SHED_POOL_WAIT_TARGET_MS": f"20 ms, {_GATE}",
    "SHED_QUEUE_TARGET_MS": f"5 ms, {_GATE}",
    "SHED_MIN_LIMIT": (
        "4 (or SHED_MAX_LIMIT when that is less), "
        "project.server.admission.limit.LimitConfig"
    ),
    "SHED_RETRY_AFTER_S": "1 s, project.server.admission.runtime.RETRY_AFTER_S",
    "CACHE_MAX_ENTRY_BYTES": "1 MiB, project.core.bounded_cache.MAX_ENTRY_BYTES",
    "REDIS_TIMEOUT_MS": "100 ms, settings/base.py REDIS_TIMEOUT_MS",
    "REDIS_MAX_CONNECTIONS": "32 per worker, settings/base.py REDIS_MAX_CONNECTIONS",
    "AGGREGATION_DEADLINE_MARGIN_MS": (
        "10 ms, project.aggregation.services.DEADLINE_MARGIN_MS"
    ),
    "AGGREGATION_CACHE": "the aggregation cache is Redis with REDIS_URL, else memory",
    "GEVENT_MAX_BLOCKING_TIME": (
        "0.1 s, project.observability.loop.MAX_BLOCKING_TIME_S; "
        "METRICS_ENABLED=false stops the monitor"
    ),
    "GEVENT_MONITOR_THREAD_ENABLE": (
        "the monitor thread runs with METRICS_ENABLED (it was overridden anyway)"
    ),
    "DEMO_MAX_LEGS": "100, project.demo.views.MAX_LEGS",
    "DEMO_MAX_MS": "10000, project.demo.views.MAX_MS",
    "DEMO_MAX_X": "1000000000, project.demo.views.MAX_X",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": (
        "always on in production; SECURE_HSTS_SECONDS=0 turns HSTS off"
    ),
    "SECURE_HSTS_PRELOAD": (
        "always on in production; SECURE_HSTS_SECONDS=0 turns HSTS off"
    ),
    "BACKLOG": _gunicorn("--backlog", "2048"),
    "GUNICORN_TIMEOUT": _gunicorn("--timeout", "the 30 s heartbeat"),
    "GUNICORN_KEEPALIVE": _gunicorn("--keep-alive", "5 s"),
    "GUNICORN_MAX_REQUESTS": _gunicorn(
        "--max-requests and --max-requests-jitter", "100000 (+ up to 10000)"
    ),
    "GUNICORN_MAX_REQUESTS_JITTER": _gunicorn("--max-requests-jitter", "10000"),
    "GUNICORN_LOG_LEVEL": _gunicorn("--log-level", "info"),
    "GUNICORN_CONTROL_SOCKET": _gunicorn(
        "--control-socket", "gunicorn-<BIND>.ctl, one per listen address,"
    ),
    "GUNICORN_ACCEPT_BATCH": "16, project.server.worker.ACCEPT_BATCH",
}
