"""The psycopg 3 rival of ``make bench-db``: its own venv, real gunicorn, real
PostgreSQL, answering like the service's ``/demo/slow-sql/``."""

import ast
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devtools.gunicorn import with_query
from devtools.processes import Processes
from loadtests.harness import pg3pool_venv
from loadtests.harness.paths import LOADTESTS
from loadtests.harness.servers import start_pg3pool
from project.demo.services import SLOW_SQL
from tests.helpers import app_backends

pytestmark = pytest.mark.django_db(transaction=True)

POOL_SIZE = 3
APPLICATION_NAME = "pg3pool-test"
REQUESTS = [
    "x=7&ms=0",
    "x=-3&ms=1",
    "x=seven&ms=10",
    "x=7",
    "x=1000000001&ms=10",
    "x=7&ms=-5",
    "x=7&x=8&ms=1",
]


def _pypi_reachable() -> bool:
    try:
        requests.head("https://pypi.org/simple/django/", timeout=10)
    except requests.RequestException:
        return False
    return True


@pytest.fixture(scope="module")
def rival_python():
    """The rival's venv, built if needed; skipped only when PyPI is unreachable
    (any other failure to build it fails the test)."""
    try:
        return pg3pool_venv.ensure_venv()
    except pg3pool_venv.VenvError:
        if not _pypi_reachable():
            pytest.skip("PyPI is unreachable: the pg3pool venv cannot be built")
        raise


@pytest.fixture
def rival(rival_python, test_database_url):
    """The rival (2 gevent workers, a pool of POOL_SIZE each) on the test database."""
    with Processes() as processes:
        yield start_pg3pool(
            processes,
            database_url=with_query(
                test_database_url, {"application_name": APPLICATION_NAME}
            ),
            pool_size=POOL_SIZE,
        )


def test_the_rival_answers_like_the_service(rival, client):
    """Good and bad requests: the same status and the same JSON as the service's
    view, so the bench's locustfile checks both alike."""
    for query in REQUESTS:
        ours = client.get(f"/demo/slow-sql/?{query}")
        theirs = requests.get(f"{rival}/demo/slow-sql/?{query}", timeout=10)
        assert (theirs.status_code, theirs.json()) == (
            ours.status_code,
            ours.json(),
        ), query


def test_the_rival_holds_at_most_its_budget(rival):
    """Twenty concurrent 300 ms queries on 2 workers open at most 2 x POOL_SIZE
    connections, and all of them are answered (they wait for one in turn)."""

    def call(_: int) -> int:
        response = requests.get(f"{rival}/demo/slow-sql/?x=2&ms=300", timeout=10)
        return response.json()["square"]

    with ThreadPoolExecutor(20) as executor:
        answers = executor.map(call, range(20))
        assert list(answers) == [4] * 20
    assert 0 < app_backends(APPLICATION_NAME) <= 2 * POOL_SIZE


def test_the_rival_runs_the_services_query():
    """Its SQL is the service's ``SLOW_SQL`` (it cannot import that module: the
    service's pool needs psycopg2, which its venv lacks)."""
    tree = ast.parse((LOADTESTS / "pg3pool" / "views.py").read_text())
    values = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["SLOW_SQL"]
        and isinstance(node.value, ast.Constant)
    ]
    assert values == [SLOW_SQL]


def test_the_venv_is_rebuilt_only_when_its_requirements_change(tmp_path):
    """A second call reuses the venv; an edited requirements file rebuilds it
    (an empty set: no package index needed)."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing\n")
    venv = tmp_path / "venv"
    python = pg3pool_venv.ensure_venv(venv, requirements)
    assert python.exists()
    marker = venv / "built-before"
    marker.touch()
    assert pg3pool_venv.ensure_venv(venv, requirements) == python
    assert marker.exists()
    requirements.write_text("# still nothing, but changed\n")
    pg3pool_venv.ensure_venv(venv, requirements)
    assert python.exists() and not marker.exists()
