"""``GET /api/aggregate/<name>/`` through Django's test client: auth, input, shape."""

import pytest

from project.aggregation.engine import Aggregator
from project.core.deadline import current_deadline

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "test-token-0123456789"
REGISTRY = """\
[upstreams.stub]
base_url = "${AGG_TEST_STUB}"
timeout_ms = 500

[queries.square]
sql = "SELECT %s::bigint * %s::bigint AS square"
params = ["x", "x"]

[aggregations.demo]
deadline_ms = 400
max_deadline_ms = 800

[aggregations.demo.params]
x = { type = "int", min = -1000, max = 1000, required = true }
code = { type = "int", min = 200, max = 599, default = 200 }
name = { type = "str", pattern = "[a-z]{1,8}", default = "x" }

[aggregations.demo.sources.upstream]
upstream = "stub"
path = "/status"
query = { code = "{code}", name = "{name}" }

[aggregations.demo.sources.sql]
sql = "square"
"""


@pytest.fixture
def api(client, settings, tmp_path, monkeypatch, upstream):
    """A registry on the stub upstream, one accepted token; returns a GET helper."""
    path = tmp_path / "aggregations.toml"
    path.write_text(REGISTRY)
    monkeypatch.setenv("AGG_TEST_STUB", upstream)
    settings.AGGREGATIONS_FILE = str(path)
    settings.AGGREGATION_API_TOKENS = ["another-token", TOKEN]

    def get(url: str, token: str | None = TOKEN, **headers: str):
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return client.get(url, headers=headers)

    return get


def test_returns_every_source_with_its_status(api):
    """200 with data, partial, sources (status, latency, attempts) and timings."""
    response = api("/api/aggregate/demo/?x=-12")
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"upstream": {"status": 200}, "sql": [{"square": 144}]}
    assert body["partial"] is False
    assert body["sources"]["sql"]["status"] == "ok"
    assert body["sources"]["upstream"]["attempts"] == 1
    assert body["deadline_ms"] == 400
    assert 0 < body["elapsed_ms"] < 400


def test_required_source_error_is_a_502(api):
    """The stub answering 500 for a required source makes the response a 502."""
    response = api("/api/aggregate/demo/?x=1&code=500")
    assert response.status_code == 502
    assert response.json()["sources"]["upstream"]["status"] == "error"
    assert response.json()["data"]["sql"] == [{"square": 1}]


@pytest.mark.parametrize(
    "header, expected", [("100", 100), ("800", 800), ("5000", 800)]
)
def test_client_deadline_is_honoured_and_capped(api, header, expected):
    """X-Request-Timeout-Ms sets the deadline, capped at max_deadline_ms."""
    response = api("/api/aggregate/demo/?x=1", **{"X-Request-Timeout-Ms": header})
    assert response.json()["deadline_ms"] == expected


@pytest.mark.parametrize(
    ("request_ms", "header", "expected"),
    [
        (15000, None, 400),  # the aggregation's default
        (300, None, 300),  # a shorter request default wins
        (15000, "600", 600),
        (15000, "5000", 800),  # the aggregation's maximum
        (700, "650", 650),
    ],
)
def test_the_view_narrows_the_request_deadline_never_widens_it(
    api, settings, request_ms, header, expected
):
    """The aggregation's deadline is the request's, cut to its own budget."""
    settings.REQUEST_DEADLINE_MS = request_ms
    headers = {"X-Request-Timeout-Ms": header} if header else {}
    assert api("/api/aggregate/demo/?x=1", **headers).json()["deadline_ms"] == expected


def test_the_view_runs_under_the_deadline_it_narrowed(api, monkeypatch):
    """Everything the view does (a pool checkout in its own greenlet too)
    waits no longer than the aggregation's deadline, not the request's 15 s."""
    seen = []
    run = Aggregator.run

    def spy(self, aggregation, values, deadline, **kwargs):
        seen.append((deadline, current_deadline()))
        return run(self, aggregation, values, deadline, **kwargs)

    monkeypatch.setattr(Aggregator, "run", spy)
    assert api("/api/aggregate/demo/?x=1").status_code == 200
    [(given, active)] = seen
    assert round(given.budget * 1000) == 400
    assert active is given
    assert current_deadline() is None


@pytest.mark.parametrize(
    "token, header",
    [(None, None), ("wrong", None), ("", None), (None, f"Basic {TOKEN}")],
)
def test_missing_or_wrong_token_is_a_401(api, token, header):
    """No token, a wrong one, or another scheme: 401 JSON with WWW-Authenticate."""
    headers = {"Authorization": header} if header else {}
    response = api("/api/aggregate/demo/?x=1", token=token, **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {"error": "a valid bearer token is required"}


def test_no_configured_tokens_means_no_access(api, settings):
    """With AGGREGATION_API_TOKENS empty every request is refused."""
    settings.AGGREGATION_API_TOKENS = []
    assert api("/api/aggregate/demo/?x=1", token="").status_code == 401


def test_unknown_aggregation_is_a_404_only_after_auth(api):
    """An unknown name is a JSON 404 for a client with a token, a 401 without."""
    response = api("/api/aggregate/nope/")
    assert response.status_code == 404
    assert response.json()["aggregation"] == "nope"
    assert api("/api/aggregate/nope/", token=None).status_code == 401


BAD = [
    ("", "x"),
    ("?x=abc", "x"),
    ("?x=1001", "x"),
    ("?x=1&x=2", "x"),
    ("?x=1&code=99", "code"),
    ("?x=1&name=../etc", "name"),
    ("?x=1&name=a%2Fb", "name"),
    ("?x=1&url=http://169.254.169.254/", "url"),
]


@pytest.mark.parametrize("query, param", BAD)
def test_bad_params_are_a_400_naming_the_parameter(api, query, param):
    """Missing, malformed, repeated, out-of-range or unknown parameters: 400."""
    response = api(f"/api/aggregate/demo/{query}")
    assert response.status_code == 400
    assert response.json()["param"] == param


@pytest.mark.parametrize("header", ["0", "soon", "60001"])
def test_bad_deadline_header_is_a_400(api, header):
    """A deadline header that is not 1..REQUEST_DEADLINE_MAX_MS is a 400."""
    response = api("/api/aggregate/demo/?x=1", **{"X-Request-Timeout-Ms": header})
    assert response.status_code == 400
    assert response.json()["param"] == "X-Request-Timeout-Ms"


def test_other_methods_are_a_405(client):
    """POST is a JSON 405 (before authentication: nothing is revealed)."""
    assert client.generic("POST", "/api/aggregate/demo/").status_code == 405
    assert client.post("/api/aggregate/demo/", {"a": "1"}).status_code == 413


def test_a_deadline_too_short_for_any_call_is_a_fast_504(api):
    """With 1 ms, no source can start: every one is a timeout, at once, never a 500."""
    response = api("/api/aggregate/demo/?x=1", **{"X-Request-Timeout-Ms": "1"})
    assert response.status_code == 504
    body = response.json()
    assert {s["status"] for s in body["sources"].values()} == {"timeout"}
    assert {s["attempts"] for s in body["sources"].values()} == {0}
    assert body["elapsed_ms"] < 50
