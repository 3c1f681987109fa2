"""Django settings for the asyncio baseline: no database, the project's middleware.

The project's own ``ApiErrorMiddleware`` is sync-only; left in, Django would run
every request through a thread and the baseline would measure that, not asyncio.
"""

import os

SECRET_KEY = "!!!asyncio baseline, not a deployment!!!"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "loadtests.asyncio_baseline.views"
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
USE_TZ = True
DEMO_UPSTREAM_URL = os.environ.get("DEMO_UPSTREAM_URL", "http://127.0.0.1:9100")
DEMO_MAX_LEGS = 100
DEMO_MAX_MS = 10_000
# The project's REQUEST_DEADLINE_MS: the whole fan-out must finish within it.
REQUEST_DEADLINE_S = 15.0
