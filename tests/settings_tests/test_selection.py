"""Settings selection, ``.env`` loading and the per-environment settings.

Settings are evaluated at import time, so most tests run ``manage.py`` as a real
subprocess with a controlled environment. Those runs use a copy of the project
without a ``.env`` (a developer's ``.env`` cannot change the outcome) and always
set ``DATABASE_URL``, so no run can start the embedded development cluster.
"""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from project import embedded_pg
from settings.base import database_settings, read_knobs
from settings.knobs import KNOBS, REMOVED

BASE_DIR = Path(__file__).resolve().parents[2]
# A DATABASE_URL for commands that never connect: nothing listens on port 1.
UNREACHABLE_DB = "postgres://nobody@127.0.0.1:1/none"
# Keys the tests control; anything the parent process has for them is dropped.
CONTROLLED = {"DJANGO_SETTINGS_MODULE", *(knob.name for knob in KNOBS), *REMOVED}
PRINT_MODULE = "from django.conf import settings; print(settings.SETTINGS_MODULE)"


def copy_project(destination: Path) -> Path:
    """Copy manage.py, the registry, project/ and settings/ (no .env)."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copy2(BASE_DIR / "manage.py", destination / "manage.py")
    (destination / "examples").mkdir()
    shutil.copy2(
        BASE_DIR / "examples" / "aggregations.toml",
        destination / "examples" / "aggregations.toml",
    )
    for package in ("project", "settings"):
        shutil.copytree(BASE_DIR / package, destination / package, ignore=ignore)
    return destination


@pytest.fixture(scope="module")
def clean_project(tmp_path_factory) -> Path:
    """A copy of the project with no ``.env`` beside its manage.py."""
    return copy_project(tmp_path_factory.mktemp("clean-project"))


@pytest.fixture
def project_with_env(tmp_path) -> Path:
    """A copy of the project whose ``.env`` the test writes."""
    return copy_project(tmp_path)


def environment(**overrides: str) -> dict[str, str]:
    """The OS environment without the controlled keys, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env["DATABASE_URL"] = UNREACHABLE_DB
    env.update(overrides)
    # A key given as None is left unset.
    return {key: value for key, value in env.items() if value is not None}


def manage(
    project: Path, *args: str, cwd: Path | str | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run ``<project>/manage.py *args`` with the controlled environment."""
    return subprocess.run(
        [sys.executable, str(project / "manage.py"), *args],
        cwd=cwd or project,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def shell(project: Path, code: str, **kwargs) -> str:
    """Run ``manage.py shell -c code``; return its stdout, failing on errors."""
    result = manage(project, "shell", "-v", "0", "-c", code, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (the exception of a traceback)."""
    return text.strip().splitlines()[-1]


def production_env(**overrides: str) -> dict[str, str]:
    """Environment for a valid production start, with ``overrides``."""
    env = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "example.com",
        "AGGREGATIONS_FILE": str(BASE_DIR / "examples" / "aggregations.toml"),
    }
    env.update(overrides)
    return env


# Selection


@pytest.mark.parametrize("name", ["development", "production", "test"])
def test_environment_selects_settings_module(clean_project, name):
    """ENVIRONMENT=<name> loads settings.<name>."""
    env = production_env(ENVIRONMENT=name)
    assert shell(clean_project, PRINT_MODULE, **env) == f"settings.{name}"


def test_default_environment_is_development(clean_project):
    """Without ENVIRONMENT (and no .env), settings.development is loaded."""
    assert shell(clean_project, PRINT_MODULE) == "settings.development"


def test_unknown_environment_fails_naming_allowed_values(clean_project):
    """ENVIRONMENT=bogus exits non-zero naming ENVIRONMENT and the allowed values."""
    result = manage(clean_project, "check", ENVIRONMENT="bogus")
    assert result.returncode != 0
    message = last_line(result.stderr)
    assert "ENVIRONMENT" in message
    assert "bogus" in message
    for allowed in ("development", "production", "test"):
        assert allowed in message


def test_django_settings_module_wins_over_environment(clean_project):
    """An explicit DJANGO_SETTINGS_MODULE wins over ENVIRONMENT."""
    output = shell(
        clean_project,
        PRINT_MODULE,
        ENVIRONMENT="production",
        DJANGO_SETTINGS_MODULE="settings.test",
    )
    assert output == "settings.test"


# Production


@pytest.mark.parametrize(
    "key", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "AGGREGATIONS_FILE"]
)
@pytest.mark.parametrize("empty", [False, True], ids=["unset", "empty"])
def test_production_refuses_to_start_without_required_key(clean_project, key, empty):
    """Production refuses to start, naming the key, when it is unset or empty
    (no embedded development cluster, no example registry in production)."""
    env = production_env()
    env[key] = "" if empty else None
    result = manage(clean_project, "check", **env)
    assert result.returncode != 0
    message = last_line(result.stderr)
    assert "ImproperlyConfigured" in message
    assert key in message


def test_production_deploy_check_is_clean(clean_project):
    """`check --deploy --fail-level WARNING` passes under production settings."""
    result = manage(
        clean_project,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        **production_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_has_debug_and_demo_endpoints_off(clean_project):
    """Production runs with DEBUG False and DEMO_ENDPOINTS False by default."""
    output = shell(
        clean_project,
        "from django.conf import settings; "
        "print(settings.DEBUG, settings.DEMO_ENDPOINTS)",
        **production_env(),
    )
    assert output == "False False"


def test_production_demo_endpoints_can_be_turned_on(clean_project):
    """DEMO_ENDPOINTS=1 turns the demo endpoints on in production."""
    output = shell(
        clean_project,
        "from django.conf import settings; print(settings.DEMO_ENDPOINTS)",
        **production_env(DEMO_ENDPOINTS="1"),
    )
    assert output == "True"


@pytest.mark.parametrize("name", ["development", "production"])
def test_django_warnings_are_logged_once(clean_project, name):
    """A ``django.request`` warning (e.g. a 401) is one line on stderr, formatted,
    not also Django's own debug console copy."""
    code = "import logging; logging.getLogger('django.request').warning('probe-401')"
    result = manage(
        clean_project,
        "shell",
        "-v",
        "0",
        "-c",
        code,
        **production_env(ENVIRONMENT=name),
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "probe-401" in line]
    assert len(lines) == 1, result.stderr
    assert "WARNING" in lines[0] and "django.request" in lines[0]


# .env

PRINT_ENV_VALUES = (
    "from django.conf import settings; "
    "print(settings.SETTINGS_MODULE, settings.WORKER_CONNECTIONS, settings.LOG_LEVEL)"
)


def test_env_file_is_found_next_to_manage_py_from_any_cwd(project_with_env):
    """.env beside manage.py is read when the working directory is elsewhere."""
    (project_with_env / ".env").write_text(
        "WORKER_CONNECTIONS=1234\nLOG_LEVEL=WARNING\n"
    )
    output = shell(project_with_env, PRINT_ENV_VALUES, cwd="/")
    assert output == "settings.development 1234 WARNING"


def test_os_environment_wins_over_env_file(project_with_env):
    """A key set in the OS environment overrides the same key in .env."""
    (project_with_env / ".env").write_text(
        "WORKER_CONNECTIONS=1234\nLOG_LEVEL=WARNING\n"
    )
    output = shell(
        project_with_env, PRINT_ENV_VALUES, cwd="/", WORKER_CONNECTIONS="999"
    )
    assert output == "settings.development 999 WARNING"


def test_environment_in_env_file_selects_settings_module(project_with_env):
    """ENVIRONMENT=test in .env selects settings.test."""
    (project_with_env / ".env").write_text("ENVIRONMENT=test\n")
    assert shell(project_with_env, PRINT_MODULE, cwd="/") == "settings.test"


# Test settings, in process


def test_test_settings_database_is_gevent_safe():
    """Test settings keep no connections or request transactions, and set timeouts."""
    db = django_settings.DATABASES["default"]
    assert db["CONN_MAX_AGE"] == 0
    assert db["ATOMIC_REQUESTS"] is False
    assert db["OPTIONS"]["connect_timeout"] > 0
    server_options = db["OPTIONS"]["options"]
    for option in (
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "lock_timeout",
    ):
        assert f"-c {option}=" in server_options


def test_test_settings_use_their_own_embedded_cluster():
    """Without DATABASE_URL, test settings use .data/postgres-test, not the dev data."""
    code = (
        "from django.conf import settings as s;"
        "print(s.EMBEDDED_PG_DATA_DIR, s.DATABASES['default']['HOST'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=environment(DATABASE_URL=None, DJANGO_SETTINGS_MODULE="settings.test"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data_dir, host = result.stdout.split()
    assert Path(data_dir) == BASE_DIR / ".data" / "postgres-test"
    assert Path(data_dir) != embedded_pg.DEV_DATA_DIR
    assert host == str(embedded_pg.socket_dir(embedded_pg.TEST_DATA_DIR))


# database_settings


def test_database_settings_parses_tcp_url(monkeypatch, tmp_path):
    """A TCP DATABASE_URL gives host, port, name and credentials; no embedded dir."""
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@127.0.0.1:6543/db")
    db, embedded = database_settings(tmp_path / "unused", read_knobs())
    assert embedded is None
    assert db["ENGINE"] == "project.core.pg_pool"
    assert (db["HOST"], int(db["PORT"]), db["NAME"]) == ("127.0.0.1", 6543, "db")
    assert (db["USER"], db["PASSWORD"]) == ("u", "p")


def test_database_settings_decodes_unix_socket_host(monkeypatch, tmp_path):
    """A %-encoded unix-socket host in DATABASE_URL is decoded to its path."""
    monkeypatch.setenv("DATABASE_URL", "postgres://u@%2Ftmp%2Fsock/db")
    db, embedded = database_settings(tmp_path / "unused", read_knobs())
    assert embedded is None
    assert db["HOST"] == "/tmp/sock"
    assert (db["NAME"], db["USER"]) == ("db", "u")


# Migrations


@pytest.mark.django_db
def test_no_missing_migrations(test_database_url):
    """`makemigrations --check --dry-run` finds no model change without a migration."""
    result = manage(
        BASE_DIR,
        "makemigrations",
        "--check",
        "--dry-run",
        ENVIRONMENT="test",
        DATABASE_URL=test_database_url,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def database(tmp_path: Path) -> dict:
    """``DATABASES["default"]`` from the environment as it is now."""
    return database_settings(tmp_path / "unused", read_knobs())[0]


def test_database_settings_pool_options(monkeypatch, tmp_path):
    """The pool's options reach the pooled backend; by default its size comes
    from the budget, shared by this host's workers."""
    monkeypatch.setenv("DATABASE_URL", "postgres://u@127.0.0.1/db")
    monkeypatch.setenv("WEB_CONCURRENCY", "8")
    monkeypatch.setenv("WORKER_CONNECTIONS", "50")
    monkeypatch.delenv("DB_POOL_SIZE", raising=False)
    db = database(tmp_path)
    assert (db["ENGINE"], db["CONN_MAX_AGE"]) == ("project.core.pg_pool", 0)
    options = db["OPTIONS"]
    assert options["pool_size"] is None  # sized from max_connections at first use
    assert options["pool_share"] == 8
    assert options["pool_timeout"] is None  # the request's deadline bounds the wait
    assert options["pool_max_waiting"] == 500  # 10 x WORKER_CONNECTIONS
    assert options["pool_reserve"] == 10
    monkeypatch.setenv("DB_POOL_SIZE", "7")
    assert database(tmp_path)["OPTIONS"]["pool_size"] == 7


def test_database_url_query_sets_connection_options(monkeypatch, tmp_path):
    """libpq's options and server-side cursors come from DATABASE_URL's query;
    without it, the defaults."""
    monkeypatch.setenv("DATABASE_URL", "postgres://u@127.0.0.1/db")
    db = database(tmp_path)
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is False
    assert db["OPTIONS"]["application_name"] == "gevent-django"
    assert db["OPTIONS"]["connect_timeout"] == 5
    monkeypatch.setenv(
        "DATABASE_URL",
        "postgres://u@127.0.0.1/db?application_name=mine&connect_timeout=2"
        "&disable_server_side_cursors=true&conn_max_age=60",
    )
    db = database(tmp_path)
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert (db["OPTIONS"]["application_name"], db["OPTIONS"]["connect_timeout"]) == (
        "mine",
        2,
    )
    assert db["CONN_MAX_AGE"] == 0  # the pool hands connections back
    monkeypatch.setenv(
        "DATABASE_URL", "postgres://u@127.0.0.1/db?disable_server_side_cursors=false"
    )
    assert database(tmp_path)["DISABLE_SERVER_SIDE_CURSORS"] is False


def test_database_settings_without_pool_uses_djangos_backend(monkeypatch, tmp_path):
    """DB_POOL_SIZE=0 selects Django's backend, with the URL's conn_max_age
    (baselines)."""
    monkeypatch.setenv("DATABASE_URL", "postgres://u@127.0.0.1/db?conn_max_age=60")
    monkeypatch.setenv("DB_POOL_SIZE", "0")
    db = database(tmp_path)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert db["CONN_MAX_AGE"] == 60
    assert "pool_size" not in db["OPTIONS"]


def test_api_tokens_are_stripped(monkeypatch):
    """Spaces around the commas are not part of a token."""
    tokens = " first-token-0123456789 , second-token-0123456789 "
    monkeypatch.setenv("AGGREGATION_API_TOKENS", tokens)
    assert read_knobs()["AGGREGATION_API_TOKENS"] == [
        "first-token-0123456789",
        "second-token-0123456789",
    ]
    for empty in ("", "  "):
        monkeypatch.setenv("AGGREGATION_API_TOKENS", empty)
        assert read_knobs()["AGGREGATION_API_TOKENS"] == []


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("first-token-0123456789,", "empty item (a stray comma?)"),
        ("first-token-0123456789,,second-token-0123456789", "empty item"),
        ("short", "at least 16 characters"),
    ],
)
def test_bad_api_tokens_stop_the_service(clean_project, raw, problem):
    """An empty or short token stops the service with a message saying why."""
    result = manage(clean_project, "check", AGGREGATION_API_TOKENS=raw)
    assert result.returncode != 0
    assert problem in last_line(result.stderr)


# Shared cache (Redis)

CACHE_CHOICE = (
    "from django.conf import settings as s;"
    "shared = s.CACHES.get('shared');"
    "print(s.AGGREGATION_CACHE, shared and shared['BACKEND'],"
    " shared and shared['OPTIONS']['PRIMARY']['OPTIONS']['socket_timeout'])"
)


def test_without_redis_url_the_aggregation_cache_stays_per_worker(clean_project):
    assert shell(clean_project, CACHE_CHOICE) == "default None None"


def test_redis_url_makes_a_shared_cache_with_the_timeout(clean_project):
    """REDIS_URL: CACHES["shared"] (Redis, falling back to memory) is the default."""
    output = shell(
        clean_project,
        CACHE_CHOICE,
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert output == "shared project.core.fallback_cache.FallbackCache 0.1"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"REDIS_TIMEOUT_MS": "250"}, "REDIS_TIMEOUT_MS is no longer a setting"),
        ({"REDIS_MAX_CONNECTIONS": "8"}, "REDIS_MAX_CONNECTIONS is no longer a"),
        ({"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL: must start with redis://"),
        ({"AGGREGATION_CACHE": "shared"}, "AGGREGATION_CACHE is no longer a setting"),
    ],
)
def test_bad_redis_settings_stop_the_service(clean_project, env, problem):
    result = manage(clean_project, "check", **env)
    assert result.returncode != 0
    message = last_line(result.stderr)
    assert "ImproperlyConfigured" in message
    assert problem in message
