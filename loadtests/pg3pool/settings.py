"""Django settings of the psycopg 3 rival: one database, Django's own pool.

``DATABASE_URL`` is the bench's database, its ``application_name`` query (as
the service reads it) the name on every connection, so the bench's sampler
counts them; ``DB_POOL_SIZE`` the connections per worker (min and max, the
budget ``gevent pool 32`` runs on). Every connection gets the service's session
settings, so both answer the same query on the same terms.
"""

import os
from urllib.parse import parse_qs, unquote, urlsplit

SECRET_KEY = "!!!psycopg 3 rival, not a deployment!!!"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "loadtests.pg3pool.views"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
USE_TZ = True
TIME_ZONE = "UTC"
DEMO_MAX_MS = 10_000
DEMO_MAX_X = 1_000_000_000
# The service's REQUEST_DEADLINE_MS: its pool waits at most that for a connection.
POOL_TIMEOUT_S = 15.0
# The service's defaults (settings/base.py), in libpq's ``options`` string.
SERVER_OPTIONS = (
    "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000 "
    "-c lock_timeout=10000 -c TimeZone=UTC"
)

_url = urlsplit(os.environ["DATABASE_URL"])
_size = int(os.environ["DB_POOL_SIZE"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        # The embedded cluster's host is a %-encoded unix socket directory.
        "HOST": unquote(_url.hostname or ""),
        "PORT": str(_url.port or ""),
        "OPTIONS": {
            "application_name": parse_qs(_url.query).get(
                "application_name", ["pg3pool"]
            )[0],
            "connect_timeout": 5,
            "options": SERVER_OPTIONS,
            "pool": {"min_size": _size, "max_size": _size, "timeout": POOL_TIMEOUT_S},
        },
    }
}
