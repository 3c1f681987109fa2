"""Local development: debug on, obviously fake secret."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="!!!SET SECRET_KEY!!!-development-only")
