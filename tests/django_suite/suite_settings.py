"""Settings for Django's ``tests/runtests.py`` in the conformance runs.

``run.py`` picks the run through the environment: ``DJANGO_SUITE_BACKEND``
(``stock`` or ``ours``), ``DJANGO_SUITE_DB`` (the database name prefix of the
run, so runs can share one cluster) and ``DATABASE_URL`` (the throwaway
cluster). Both backends take their settings from the service's own
``database_settings``: ours as the service runs by default (``DB_POOL_SIZE``
unset), stock as its no-pool baseline (``DB_POOL_SIZE=0``), so they share
every connection and server option and differ only in ENGINE and pool options.
"""

import copy
import os

from django.core.exceptions import ImproperlyConfigured

from project import embedded_pg
from settings.base import database_settings

ENGINES = {"stock": "django.db.backends.postgresql", "ours": "project.core.pg_pool"}

_backend = os.environ["DJANGO_SUITE_BACKEND"]
_prefix = os.environ["DJANGO_SUITE_DB"]
# DATABASE_URL is set, so the embedded data dir given here is never used.
_db, _ = database_settings(embedded_pg.TEST_DATA_DIR)
if _db["ENGINE"] != ENGINES[_backend]:
    raise ImproperlyConfigured(
        f"{_backend} run got ENGINE {_db['ENGINE']!r}: check DB_POOL_SIZE in .env"
    )

DATABASES = {
    alias: {**copy.deepcopy(_db), "NAME": name}
    for alias, name in (("default", _prefix), ("other", f"{_prefix}_other"))
}

# As Django's own tests/test_sqlite.py has them.
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False

TEST_RUNNER = "tests.django_suite.recorder.RecordingRunner"
