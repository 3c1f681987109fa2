"""The settings table (settings/knobs/): its docs, its reading, removed names."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from project.core.fd_budget import default_http_pool_size
from settings import docs, knobs

BASE_DIR = Path(__file__).resolve().parent.parent
SOURCES = ["settings", "project", "gunicorn.conf.py"]
KEY_READ = re.compile(
    r"""(?:KNOBS|_knob|values)\[\s*"([A-Z][A-Z0-9_]+)"\s*\]|os\.environ\.get\(\s*"([A-Z][A-Z0-9_]+)\""""
)
# Set by Django, the OS session or prometheus_client, not by the project's users.
NOT_OURS = {"DJANGO_SETTINGS_MODULE", "XDG_RUNTIME_DIR"}
UNREACHABLE_DB = "postgres://nobody@127.0.0.1:1/none"


def keys_read_by_code() -> set[str]:
    keys: set[str] = set()
    for source in SOURCES:
        path = BASE_DIR / source
        files = [path] if path.is_file() else path.rglob("*.py")
        for file in files:
            for match in KEY_READ.findall(file.read_text()):
                keys.update(key for key in match if key)
    return keys


def test_generated_docs_match_the_table():
    """.env.template and README's table are what the table generates."""
    stale = []
    if docs.TEMPLATE.read_text() != docs.env_template():
        stale.append(".env.template")
    readme = docs.README.read_text()
    if docs.readme_with_table(readme) != readme:
        stale.append("README.md's settings table")
    assert not stale, f"{' and '.join(stale)} out of date: run `{docs.COMMAND}`"


def test_readme_table_is_replaced_between_its_markers_only():
    """Regenerating keeps the README's own text, and the markers, in place."""
    readme = f"before\n{docs.BEGIN}\nstale row\n{docs.END}\nafter\n"
    new = docs.readme_with_table(readme)
    assert new.startswith(f"before\n{docs.BEGIN}\n")
    assert new.endswith(f"{docs.END}\nafter\n")
    assert "stale row" not in new and "| `DATABASE_URL` |" in new
    with pytest.raises(ValueError, match="markers"):
        docs.readme_with_table("no table here")


def test_every_key_the_code_reads_is_in_the_table_and_every_knob_is_read():
    declared = {knob.name for knob in knobs.KNOBS}
    read = keys_read_by_code() - NOT_OURS
    assert {"DATABASE_URL", "SECRET_KEY", "WORKER_CONNECTIONS"} <= read
    assert read <= declared
    assert declared <= read


def test_each_knob_is_declared_once_and_never_also_removed():
    names = [knob.name for knob in knobs.KNOBS]
    assert len(names) == len(set(names))
    assert not set(names) & set(knobs.REMOVED)


def test_an_empty_value_is_the_default_and_production_has_its_own():
    values = knobs.read({"WORKER_CONNECTIONS": " ", "DEMO_ENDPOINTS": ""})
    assert values["WORKER_CONNECTIONS"] == 1000
    assert values["DEMO_ENDPOINTS"] is True
    assert values["GUNICORN_ACCESS_LOG"] == "-"
    assert knobs.read({"GUNICORN_ACCESS_LOG": ""})["GUNICORN_ACCESS_LOG"] is None
    production = {"SECRET_KEY": "k", "ALLOWED_HOSTS": "h", "DATABASE_URL": "x"}
    production["AGGREGATIONS_FILE"] = "f"
    values = knobs.read(production, production=True)
    assert values["DEMO_ENDPOINTS"] is False
    assert values["METRICS_ALLOW_IPS"] == []


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WORKER_CONNECTIONS": "lots"}, "WORKER_CONNECTIONS must be a whole number"),
        ({"WORKER_CONNECTIONS": "0"}, "WORKER_CONNECTIONS must be from 1 to inf"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be plain or json, got 'xml'"),
        ({"SHED_ROUTES": "/x=urgent"}, "SHED_ROUTES: "),
        ({"REDIS_URL": "http://h"}, "REDIS_URL: must start with redis://"),
        ({"METRICS_ALLOW_IPS": "10.0.0.300"}, "METRICS_ALLOW_IPS: "),
        ({"METRICS_TOKENS": "a" * 16 + ","}, "METRICS_TOKENS has an empty item"),
        ({"AGGREGATION_API_TOKENS": "short"}, "every token needs at least 16"),
        ({"DATABASE_URL": "postgres://u@h:port/db"}, "DATABASE_URL: Port could"),
    ],
)
def test_a_wrong_value_names_its_key_and_the_problem(env, problem):
    with pytest.raises(knobs.KnobError) as raised:
        knobs.read(env)
    assert problem in str(raised.value)


@pytest.mark.parametrize("key", ["SECRET_KEY", "ALLOWED_HOSTS", "AGGREGATIONS_FILE"])
def test_production_requires_its_keys(key):
    env = {"SECRET_KEY": "k", "ALLOWED_HOSTS": "h", "DATABASE_URL": "x"}
    env["AGGREGATIONS_FILE"] = "f"
    env[key] = " "
    with pytest.raises(knobs.KnobError, match=f"Set the {key} environment variable"):
        knobs.read(env, production=True)


@pytest.mark.parametrize("name", sorted(knobs.REMOVED))
def test_every_removed_name_is_refused_with_what_to_do(name):
    with pytest.raises(knobs.KnobError) as raised:
        knobs.read({name: "1"})
    message = str(raised.value)
    assert message == f"{name} is no longer a setting: {knobs.REMOVED[name]}"
    assert len(knobs.REMOVED[name]) > 10


def run(code: list[str], env: dict[str, str], cwd: Path = BASE_DIR):
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in knobs.REMOVED and key != "DJANGO_SETTINGS_MODULE"
    }
    return subprocess.run(
        [sys.executable, *code],
        cwd=cwd,
        env={**base, "DATABASE_URL": UNREACHABLE_DB, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_refuse_a_removed_name_at_import():
    result = run(
        ["manage.py", "check"],
        {"ENVIRONMENT": "test", "HTTP_MAX_HEADERS": "200", "DEBUG": ""},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: DEBUG is")
    assert "HTTP_MAX_HEADERS is no longer a setting: a constant of" in last


def test_a_removed_name_in_env_file_is_refused(tmp_path):
    """``.env`` is read into the environment first, so its names count too."""
    env_file = tmp_path / ".env"
    env_file.write_text("SHED_MIN_LIMIT=2\n")
    code = (
        "import os, sys; sys.path.insert(0, os.getcwd()); from pathlib import Path;"
        "import settings; from settings import knobs;"
        f"settings.load_env_file(Path({str(env_file)!r}));"
        "knobs.read(os.environ)"
    )
    result = run(["-c", code], {})
    assert result.returncode != 0
    assert "SHED_MIN_LIMIT is no longer a setting" in result.stderr


def test_gunicorn_config_exits_on_a_removed_name():
    """gunicorn's master stops before it binds or forks, saying why."""
    code = "import runpy; runpy.run_path('gunicorn.conf.py')"
    result = run(["-c", code], {"GUNICORN_KEEPALIVE": "10"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "gunicorn.conf.py: GUNICORN_KEEPALIVE is no longer a setting: "
        + knobs.REMOVED["GUNICORN_KEEPALIVE"]
    )


def test_gunicorn_config_reads_the_table_without_django():
    code = (
        "import runpy, sys; c = runpy.run_path('gunicorn.conf.py');"
        "print(c['bind'], c['workers'], c['worker_connections'],"
        " c['graceful_timeout'], c['accesslog'], 'django.conf' in sys.modules)"
    )
    env = {
        "BIND": "127.0.0.1:9999",
        "WEB_CONCURRENCY": "3",
        "WORKER_CONNECTIONS": "20",
        "GUNICORN_GRACEFUL_TIMEOUT": "7",
        "GUNICORN_ACCESS_LOG": "",
    }
    result = run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["127.0.0.1:9999", "3", "20", "7", "None", "False"]


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
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": UNREACHABLE_DB},
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
