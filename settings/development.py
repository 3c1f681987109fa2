"""Local development: debug on, obviously fake secret."""

from .base import *  # noqa: F403
from .base import KNOBS

DEBUG = True
SECRET_KEY = KNOBS["SECRET_KEY"] or "!!!SET SECRET_KEY!!!-development-only"
