"""Settings selection: ``ENVIRONMENT`` picks ``settings.<ENVIRONMENT>``.

Kept free of Django imports so entry points can call :func:`select` right
after patching gevent.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = BASE_DIR / ".env"
ENVIRONMENTS = ("development", "production", "test")


def cores() -> int:
    """CPU cores this process may run on (gunicorn's default worker count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class UnknownEnvironment(RuntimeError):
    """``ENVIRONMENT`` names no settings module."""


def load_env_file(path: Path = ENV_FILE) -> None:
    """Load ``.env`` from next to ``manage.py``; the OS environment wins."""
    if path.is_file():
        import environ

        environ.Env.read_env(path, overwrite=False)


def select(default: str = "development") -> str:
    """Load ``.env`` and set ``DJANGO_SETTINGS_MODULE`` from ``ENVIRONMENT``.

    An explicit ``DJANGO_SETTINGS_MODULE`` wins. Returns the module chosen.
    """
    load_env_file()
    explicit = os.environ.get("DJANGO_SETTINGS_MODULE", "").strip()
    if explicit:
        return explicit
    name = os.environ.get("ENVIRONMENT", "").strip() or default
    if name not in ENVIRONMENTS:
        raise UnknownEnvironment(
            f"ENVIRONMENT={name!r} is not one of {', '.join(ENVIRONMENTS)}"
        )
    module = f"settings.{name}"
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    return module


def ensure_embedded_database() -> None:
    """Start the embedded PostgreSQL when the selected settings use it."""
    from django.conf import settings

    if settings.EMBEDDED_PG_DATA_DIR:
        from project import embedded_pg

        embedded_pg.ensure_running(
            Path(settings.EMBEDDED_PG_DATA_DIR), settings.DATABASES["default"]["NAME"]
        )
