"""project.green: monkey-patching gevent and psycopg2, once and early enough."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gevent import monkey
from psycopg2 import extensions

from project import green

BASE_DIR = Path(__file__).resolve().parent.parent
# For commands that never connect: nothing listens on port 1.
UNREACHABLE_DB = "postgres://nobody@127.0.0.1:1/none"
CONTROLLED = ("DJANGO_SETTINGS_MODULE", "ENVIRONMENT", "DATABASE_URL", "GEVENT_PATCH")


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the venv's python with ``args`` in the project root."""
    environment = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    environment.update(ENVIRONMENT="test", DATABASE_URL=UNREACHABLE_DB)
    environment.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def manage_shell(code: str, **env: str) -> str:
    """Run ``manage.py shell -c code``; return its stdout, failing on errors."""
    result = run_python("manage.py", "shell", "-v", "0", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


PRINT_PATCHED = (
    "from project import green; import socket, gevent.socket; "
    "print(green.is_patched(), socket.socket is gevent.socket.socket)"
)


def test_manage_py_patches_the_process():
    """Under manage.py, sockets are gevent's and psycopg2 is cooperative."""
    assert manage_shell(PRINT_PATCHED) == "True True"


def test_gevent_patch_0_leaves_the_process_unpatched():
    """GEVENT_PATCH=0 makes manage.py run with blocking sockets and psycopg2."""
    assert manage_shell(PRINT_PATCHED, GEVENT_PATCH="0") == "False False"


def test_manage_py_stops_gevent_recording_greenlet_trees():
    """Under manage.py, a greenlet spawned records no spawner or spawning stack."""
    output = manage_shell(
        "import gevent; greenlet = gevent.spawn(lambda: None); "
        "print(gevent.config.track_greenlet_tree, greenlet.spawning_stack)"
    )
    assert output == "False None"


def test_manage_py_installs_the_cancelling_wait_callback():
    """Under manage.py, psycopg2 waits through green.cancelling_wait_callback."""
    output = manage_shell(
        "from psycopg2 import extensions; "
        "callback = extensions.get_wait_callback(); "
        "print(callback.__module__ + '.' + callback.__qualname__)"
    )
    assert output == "project.green.cancelling_wait_callback"


def test_patch_is_idempotent(monkeypatch):
    """Calling patch() again returns True and keeps the cancelling wait callback."""
    monkeypatch.delenv("GEVENT_PATCH", raising=False)
    assert green.patch() is True
    assert green.patch() is True
    assert extensions.get_wait_callback() is green.cancelling_wait_callback


def test_patch_in_an_already_patched_process_only_sets_the_callback(monkeypatch):
    """A first patch() where gevent already patched (gunicorn) skips patch_all.

    It reports no late modules even though django.db is imported, and leaves
    psycopg2 with the cancelling wait callback.
    """
    monkeypatch.delenv("GEVENT_PATCH", raising=False)
    monkeypatch.setattr(green, "_state", {"patched": False, "late_modules": ()})
    calls = []
    monkeypatch.setattr(monkey, "patch_all", lambda *a, **k: calls.append(a))
    extensions.set_wait_callback(None)
    try:
        assert green.patch() is True
        assert extensions.get_wait_callback() is green.cancelling_wait_callback
    finally:
        extensions.set_wait_callback(green.cancelling_wait_callback)
    assert calls == []
    assert green._state["late_modules"] == ()


def warnings_from_green(stderr: str) -> list[str]:
    """The lines logging.basicConfig wrote for project.green warnings."""
    return [
        line for line in stderr.splitlines() if line.startswith("WARNING:project.green")
    ]


@pytest.mark.parametrize("settings_module", ["settings.test", ""])
def test_patching_after_django_db_logs_a_warning_naming_it(settings_module):
    """Importing django.db before patch() makes warn_if_patched_late name it.

    Also without a settings module: patching must not touch Django's lazy
    settings while it converts existing locks.
    """
    result = run_python(
        "-c",
        "import django.db; from project import green; green.patch(); "
        "import logging; logging.basicConfig(); green.warn_if_patched_late()",
        DJANGO_SETTINGS_MODULE=settings_module,
    )
    assert result.returncode == 0, result.stderr
    warnings = warnings_from_green(result.stderr)
    assert len(warnings) == 1, result.stderr
    assert "django.db" in warnings[0]


def test_patching_first_logs_no_warning():
    """Patching before anything else is imported logs no warning."""
    result = run_python(
        "-c",
        "from project import green; green.patch(); "
        "import logging; logging.basicConfig(); green.warn_if_patched_late()",
        DJANGO_SETTINGS_MODULE="settings.test",
    )
    assert result.returncode == 0, result.stderr
    assert warnings_from_green(result.stderr) == []
