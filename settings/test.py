"""Test runs: their own throwaway embedded cluster, never the development data."""

from project import embedded_pg

from .base import *  # noqa: F403
from .base import KNOBS, database_settings

DEBUG = False
SECRET_KEY = KNOBS["SECRET_KEY"] or "!!!SET SECRET_KEY!!!-test-only"
_default_db, EMBEDDED_PG_DATA_DIR = database_settings(embedded_pg.TEST_DATA_DIR)
DATABASES = {"default": _default_db}
