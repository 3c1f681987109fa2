"""The aggregation API in a real gunicorn gevent worker, against the stub upstream."""

import pytest
import requests
from gevent.pool import Pool

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "live-token-0123456789"
REGISTRY = """\
[upstreams.stub]
base_url = "${AGG_TEST_STUB}"

[queries.sleep]
sql = "SELECT pg_sleep(0.5)::text AS slept"

[aggregations.page]
deadline_ms = 3000
sources.one = { upstream = "stub", path = "/delay", query = { ms = "500" } }
sources.two = { upstream = "stub", path = "/delay", query = { ms = "501" } }
sources.sql = { sql = "sleep" }
"""


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory):
    """The registry above, written to a file."""
    path = tmp_path_factory.mktemp("registry") / "aggregations.toml"
    path.write_text(REGISTRY)
    return path


@pytest.fixture(scope="module")
def server(start_gunicorn, test_database_url, upstream, registry_file):
    """One gevent worker serving the registry above."""
    return start_gunicorn(
        test_database_url,
        AGGREGATIONS_FILE=str(registry_file),
        AGG_TEST_STUB=upstream,
        AGGREGATION_API_TOKENS=f"other,{TOKEN}",
    )


def test_hundred_identical_requests_make_one_call_per_source(server, upstream):
    """100 concurrent identical requests: the stub sees one request per source."""
    requests.post(f"{upstream}/stats/reset", timeout=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    responses = Pool(100).map(
        lambda _: server.get("/api/aggregate/page/", headers=headers), range(100)
    )
    assert [r.status_code for r in responses] == [200] * 100
    counts = requests.get(f"{upstream}/stats", timeout=5).json()["requests"]
    assert counts == {"/delay": 2}
    shared = sum(bool(r.json()["sources"]["one"].get("shared")) for r in responses)
    assert shared == 99
    assert "aggregate page status=200" in server.log.read_text()


def test_bad_registry_stops_the_service(
    start_gunicorn, test_database_url, upstream, tmp_path
):
    """A registry with a mistake: gunicorn exits, its log naming the line and key."""
    path = tmp_path / "bad.toml"
    path.write_text(REGISTRY.replace('sql = "sleep"', 'sql = "slept"'))
    with pytest.raises(RuntimeError) as caught:
        start_gunicorn(
            test_database_url, AGGREGATIONS_FILE=str(path), AGG_TEST_STUB=upstream
        )
    assert (
        f"aggregation registry: {path}:11: aggregations.page.sources.sql.sql: "
        "unknown query 'slept'" in str(caught.value)
    )
