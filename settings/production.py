"""Production: no defaults for secrets or hosts; HTTPS terminated by a proxy."""

from . import production_checks as checks
from .base import *  # noqa: F403
from .base import networks, read_knobs

# Production's own defaults, and the keys it requires (settings/knobs/).
KNOBS = read_knobs(production=True)

# Debug pages show settings and code to whoever triggers an error.
DEBUG = False
SECRET_KEY = checks.secret_key(KNOBS["SECRET_KEY"])
# Never the embedded development cluster, never the example registry.
checks.database_url(KNOBS["DATABASE_URL"])
AGGREGATIONS_FILE = KNOBS["AGGREGATIONS_FILE"]
ALLOWED_HOSTS = checks.allowed_hosts(KNOBS["ALLOWED_HOSTS"])
DEMO_ENDPOINTS = KNOBS["DEMO_ENDPOINTS"]
# /metrics is served only to the scrapers configured (METRICS_TOKENS or these),
# and by address only to loopback and private networks.
METRICS_ALLOW_IPS = checks.metrics_networks(networks(KNOBS["METRICS_ALLOW_IPS"]))

# Security: the proxy in front terminates TLS and sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = KNOBS["SECURE_SSL_REDIRECT"]
# Probes and scrapers come from inside, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = KNOBS["SECURE_HSTS_SECONDS"]
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
