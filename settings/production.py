"""Production: no defaults for secrets or hosts; HTTPS terminated by a proxy."""

from django.core.exceptions import ImproperlyConfigured

from . import production_checks as checks
from .base import *  # noqa: F403
from .base import allow_ips, env


def _required(key: str) -> str:
    value = env.str(key, default="").strip()
    if not value:
        raise ImproperlyConfigured(
            f"Set the {key} environment variable (production has no default)"
        )
    return value


# Debug pages show settings and code to whoever triggers an error.
if env.bool("DEBUG", default=False):
    raise ImproperlyConfigured(
        "DEBUG is true: production never shows debug pages; unset DEBUG"
    )
DEBUG = False
SECRET_KEY = checks.secret_key(_required("SECRET_KEY"))
# Never the embedded development cluster, never the example registry.
checks.database_url(_required("DATABASE_URL"))
AGGREGATIONS_FILE = _required("AGGREGATIONS_FILE")
ALLOWED_HOSTS = checks.allowed_hosts(_required("ALLOWED_HOSTS"))
DEMO_ENDPOINTS = env.bool("DEMO_ENDPOINTS", default=False)
# /metrics is served only to the scrapers configured (METRICS_TOKENS or these),
# and by address only to loopback and private networks.
METRICS_ALLOW_IPS = checks.metrics_networks(
    allow_ips(env.str("METRICS_ALLOW_IPS", default=""))
)

# Security: the proxy in front terminates TLS and sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and scrapers come from inside, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
