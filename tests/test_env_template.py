""".env.template and README stay in step with the keys the code reads."""

import re
import subprocess
import sys
from pathlib import Path

from project.core.fd_budget import default_http_pool_size

BASE_DIR = Path(__file__).resolve().parent.parent
SOURCES = ["settings", "project", "gunicorn.conf.py"]
KEY_READ = re.compile(
    r"""(?:env\.(?:str|int|bool|float|list)|_int|_required|os\.environ\.get)\(\s*"([A-Z][A-Z0-9_]+)\""""
)


def keys_read_by_code() -> set[str]:
    keys: set[str] = set()
    for source in SOURCES:
        path = BASE_DIR / source
        files = [path] if path.is_file() else path.rglob("*.py")
        for file in files:
            keys |= set(KEY_READ.findall(file.read_text()))
    return keys


def template_keys() -> set[str]:
    text = (BASE_DIR / ".env.template").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_template_lists_every_key_the_code_reads():
    """Every environment key read by settings, core or gunicorn is in .env.template."""
    keys = keys_read_by_code()
    assert {"DATABASE_URL", "SECRET_KEY", "WORKER_CONNECTIONS"} <= keys
    # Set by Django or the OS session, not by the project's users.
    not_ours = {"DJANGO_SETTINGS_MODULE", "XDG_RUNTIME_DIR"}
    assert keys - not_ours <= template_keys()


def test_readme_documents_every_template_key():
    """The README's configuration table names every .env.template key."""
    readme = (BASE_DIR / "README.md").read_text()
    missing = {key for key in template_keys() if f"`{key}`" not in readme}
    assert missing == set()


def test_template_copied_verbatim_keeps_development_defaults(tmp_path):
    """A .env copied from the template (empty values) leaves the defaults in force."""
    script = (
        "import os, sys; sys.path.insert(0, os.getcwd());"
        "from pathlib import Path; import settings;"
        f"settings.load_env_file(Path({str(tmp_path / '.env')!r}));"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'settings.development';"
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.DEMO_ENDPOINTS, s.ALLOWED_HOSTS,"
        " s.HTTP_POOL_MAXSIZE, bool(s.SECRET_KEY))"
    )
    (tmp_path / ".env").write_text((BASE_DIR / ".env.template").read_text())
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgres://x@127.0.0.1:1/x"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "True",
        "True",
        "['localhost',",
        "'127.0.0.1',",
        "'[::1]']",
        str(default_http_pool_size(1000)),  # the same limit as this process
        "True",
    ]
