"""Production refuses settings that parse but mean nothing safe, before it serves.

Each refusal runs ``manage.py check`` in a subprocess (settings are evaluated
at import) on a copy of the project without a ``.env``; two runs start a real
gunicorn: refused, it exits before answering; with good settings, it serves.
"""

import re
from pathlib import Path

import pytest
import requests

from devtools.gunicorn import Server, start_gunicorn
from devtools.processes import Processes

from .test_selection import (
    UNREACHABLE_DB,
    copy_project,
    environment,
    last_line,
    manage,
    production_env,
    shell,
)

PASSWORD = "s3cret-db-password"


@pytest.fixture(scope="module")
def clean_project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("refusals-project"))


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("SECRET_KEY", "abc", "SECRET_KEY has 3 characters; production needs at"),
        ("SECRET_KEY", PASSWORD, "SECRET_KEY has 18 characters; production needs"),
        ("SECRET_KEY", "ab" * 40, "SECRET_KEY has 2 distinct characters"),
        ("ALLOWED_HOSTS", " , ", "ALLOWED_HOSTS names no host"),
        ("ALLOWED_HOSTS", "*", "ALLOWED_HOSTS has a wildcard (*)"),
        ("ALLOWED_HOSTS", "example.com,*.example.com", "has a wildcard (*.example"),
        ("DATABASE_URL", "junk", "DATABASE_URL is not a PostgreSQL URL"),
        ("DATABASE_URL", f"mysql://u:{PASSWORD}@h/db", "is not a PostgreSQL URL"),
        ("DATABASE_URL", f"postgres://u:{PASSWORD}@/db", "DATABASE_URL names no host"),
        ("DATABASE_URL", "postgres:///db", "DATABASE_URL names no host"),
        ("DATABASE_URL", f"postgres://u:{PASSWORD}@h:5432/", "names no database"),
        ("DATABASE_URL", "postgres://u@h:port/db", "DATABASE_URL: Port could not"),
        ("METRICS_ALLOW_IPS", "0.0.0.0/0", "METRICS_ALLOW_IPS: 0.0.0.0/0 is wider"),
        ("METRICS_ALLOW_IPS", "::/0", "METRICS_ALLOW_IPS: ::/0 is wider"),
        ("METRICS_ALLOW_IPS", "127.0.0.1,203.0.113.7", ": 203.0.113.7/32 is wider"),
        ("METRICS_ALLOW_IPS", "10.0.0.0/7", "METRICS_ALLOW_IPS: 10.0.0.0/7 is wider"),
        ("METRICS_ALLOW_IPS", "172.32.0.0/16", ": 172.32.0.0/16 is wider"),
        ("DEBUG", "false", "DEBUG is no longer a setting: it follows ENVIRONMENT"),
    ],
)
def test_production_refuses_a_meaningless_setting(clean_project, key, value, problem):
    """The run fails on ImproperlyConfigured, naming the key and what is wrong,
    and never echoes a secret."""
    result = manage(clean_project, "check", **production_env(**{key: value}))
    assert result.returncode != 0
    message = last_line(result.stderr)
    assert "ImproperlyConfigured" in message
    assert key in message and problem in message, message
    assert PASSWORD not in result.stderr


GOOD = {
    "SECRET_KEY": "a-long-and-varied-secret-key-" + "0123456789abcdefghij" * 2,
    "ALLOWED_HOSTS": " api.example.com , .internal.example.com ",
    "DATABASE_URL": "postgresql://app@%2Fvar%2Frun%2Fpostgresql/app",
    "METRICS_ALLOW_IPS": "127.0.0.1,::1,10.2.0.0/16,172.16.0.0/12,192.168.1.5,fd00::/8",
}


def test_production_accepts_good_settings(clean_project):
    output = shell(
        clean_project,
        "from django.conf import settings as s;"
        "print(s.ALLOWED_HOSTS, s.DATABASES['default']['HOST'],"
        " len(s.METRICS_ALLOW_IPS), s.DEBUG)",
        **production_env(**GOOD),
    )
    expected = "['api.example.com', '.internal.example.com'] /var/run/postgresql 6"
    assert output == f"{expected} False"


def start(processes: Processes, **overrides: str) -> Server:
    """gunicorn in production (no database needed for /healthz), in the
    controlled environment; its output in ``processes``' log dir."""
    return start_gunicorn(
        processes,
        environment="production",
        database_url=UNREACHABLE_DB,
        inherit=environment(),
        env=production_env(
            **{
                "ALLOWED_HOSTS": "127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",
                **overrides,
            }
        ),
    )


def test_gunicorn_stops_before_serving_on_a_refused_setting(tmp_path):
    with Processes(tmp_path) as processes:
        with pytest.raises(RuntimeError, match=r"exited with [1-9]") as refused:
            start(processes, METRICS_ALLOW_IPS="0.0.0.0/0")
    assert "METRICS_ALLOW_IPS: 0.0.0.0/0 is wider" in refused.value.args[0]
    url = re.search(r"before (http://[\d.:]+)/healthz", refused.value.args[0])
    assert url is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(url[1] + "/healthz", timeout=2)


def test_gunicorn_serves_with_good_production_settings(tmp_path):
    with Processes(tmp_path) as processes:
        server = start(processes, **{**GOOD, "ALLOWED_HOSTS": "127.0.0.1"})
        assert server.get("/healthz", timeout=5).json() == {"status": "ok"}
