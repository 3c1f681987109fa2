"""The reference endpoints through Django's test client (validation, shapes)."""

import time

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

BAD_INPUT = [
    ("/demo/delay/", "ms"),
    ("/demo/delay/?ms=-1", "ms"),
    ("/demo/delay/?ms=abc", "ms"),
    ("/demo/delay/?ms=10001", "ms"),
    ("/demo/delay/?ms=1.5", "ms"),
    ("/demo/slow-sql/?ms=10", "x"),
    ("/demo/slow-sql/?x=7", "ms"),
    ("/demo/slow-sql/?x=seven&ms=10", "x"),
    ("/demo/slow-sql/?x=1000000001&ms=10", "x"),
    ("/demo/slow-sql/?x=7&ms=99999999999999999999999", "ms"),
    ("/demo/slow-sql/?x=7&ms=-5", "ms"),
    ("/demo/fan-out/?http=1", "ms"),
    ("/demo/fan-out/?http=-1&ms=10", "http"),
    ("/demo/fan-out/?http=101&ms=10", "http"),
    ("/demo/fan-out/?sql=x&ms=10", "sql"),
    ("/demo/fan-out/?http=60&sql=41&ms=10", "http+sql"),
    ("/demo/fan-out/?ms=10", "http+sql"),
    ("/demo/fan-out/?http=1&ms=20000", "ms"),
    # Repeated parameters are refused, not "the last one wins".
    ("/demo/delay/?ms=abc&ms=1", "ms"),
    ("/demo/slow-sql/?x=7&x=8&ms=1", "x"),
    ("/demo/fan-out/?http=1&http=2&ms=1", "http"),
    ("/demo/delay/?ms=" + "9" * 5000, "ms"),
]


@pytest.mark.parametrize("url, param", BAD_INPUT)
def test_bad_input_is_a_400_naming_the_parameter(client, url, param):
    """Returns 400 with a JSON body naming the offending parameter."""
    response = client.get(url)
    assert response.status_code == 400
    body = response.json()
    assert body["param"] == param
    assert body["error"]


@pytest.mark.parametrize(
    "header", ["0", "-5", "soon", "60001", "9" * 4301, "1" * 100_000, "١٠"]
)
def test_bad_deadline_header_is_a_400(client, header):
    """Returns 400 naming X-Request-Timeout-Ms when the header is not 1..max."""
    response = client.get(
        "/demo/slow-sql/?x=1&ms=1", headers={"X-Request-Timeout-Ms": header}
    )
    assert response.status_code == 400
    assert response.json()["param"] == "X-Request-Timeout-Ms"


@pytest.mark.parametrize("path", ["/demo/delay/?ms=1", "/healthz", "/demo/fan-out/"])
def test_other_methods_are_a_json_405(client, path):
    """Returns 405 JSON with an Allow header for anything but GET/HEAD."""
    response = client.generic("POST", path)  # no body (a body is a 413)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["allowed"] == ["GET"]


def test_unknown_host_is_a_json_400(client):
    """A Host header outside ALLOWED_HOSTS gets JSON, without echoing the host."""
    response = client.get("/healthz", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid Host header"}


def test_unknown_path_is_a_json_404(client):
    """Returns 404 JSON naming the path."""
    response = client.get("/demo/nope/")
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "path": "/demo/nope/"}


def test_delay_sleeps_and_reports(client):
    """Sleeps about ms and returns slept_ms; also answers without the slash."""
    started = time.monotonic()
    response = client.get("/demo/delay?ms=100")
    assert time.monotonic() - started >= 0.1
    assert response.json() == {"slept_ms": 100}


@pytest.mark.parametrize("header", ["0", "soon", "60001"])
def test_delay_validates_the_deadline_header(client, header):
    """Returns 400 naming X-Request-Timeout-Ms when it is not 1..max."""
    response = client.get("/demo/delay/?ms=1", headers={"X-Request-Timeout-Ms": header})
    assert response.status_code == 400
    assert response.json()["param"] == "X-Request-Timeout-Ms"


def test_delay_past_the_deadline_is_a_504_at_the_deadline(client):
    """A delay longer than X-Request-Timeout-Ms answers 504 when it runs out."""
    started = time.monotonic()
    response = client.get(
        "/demo/delay/?ms=3000", headers={"X-Request-Timeout-Ms": "200"}
    )
    assert 0.15 <= time.monotonic() - started < 1.0
    assert response.status_code == 504
    assert "deadline" in response.json()["error"]


def test_slow_sql_squares_in_postgres(client):
    """Returns x, its square computed by PostgreSQL, and slept_ms."""
    response = client.get("/demo/slow-sql/?x=-3000000&ms=20")
    assert response.status_code == 200
    assert response.json() == {
        "x": -3000000,
        "square": 9_000_000_000_000,
        "slept_ms": 20,
    }


def test_slow_sql_past_the_deadline_is_a_504(client):
    """Returns 504 JSON when the query outlasts X-Request-Timeout-Ms."""
    started = time.monotonic()
    response = client.get(
        "/demo/slow-sql/?x=1&ms=3000", headers={"X-Request-Timeout-Ms": "200"}
    )
    assert time.monotonic() - started < 1.5
    assert response.status_code == 504
    assert "deadline" in response.json()["error"]


def test_fan_out_reports_each_leg(client, upstream, settings):
    """Returns every leg in order (HTTP first) with status and elapsed time."""
    settings.DEMO_UPSTREAM_URL = upstream
    response = client.get("/demo/fan-out/?http=2&sql=2&ms=50")
    assert response.status_code == 200
    body = response.json()
    assert [leg["name"] for leg in body["legs"]] == ["http", "http", "sql", "sql"]
    assert [leg["status"] for leg in body["legs"]] == ["ok"] * 4
    assert body["ok"] == 4
    assert all(leg["elapsed_ms"] >= 45 for leg in body["legs"])
    assert body["elapsed_ms"] < 1000
    assert body["deadline_ms"] == 15000


def test_fan_out_reports_upstream_errors_per_leg(client, settings):
    """An unreachable upstream marks the HTTP legs as errors, not the request."""
    from devtools.ports import free_port

    settings.DEMO_UPSTREAM_URL = f"http://127.0.0.1:{free_port()}"
    response = client.get("/demo/fan-out/?http=2&sql=1&ms=10")
    assert response.status_code == 200
    legs = response.json()["legs"]
    assert [leg["status"] for leg in legs] == ["error", "error", "ok"]
    assert legs[0]["error"] == "ConnectionError: could not connect to upstream"


def test_fan_out_reports_upstream_error_status(client, upstream, settings):
    """An upstream 5xx marks the leg as an error naming the status."""
    settings.DEMO_UPSTREAM_URL = f"{upstream}/status?code=502&x="
    response = client.get("/demo/fan-out/?http=1&ms=10")
    leg = response.json()["legs"][0]
    assert (leg["status"], leg["error"]) == (
        "error",
        "UpstreamError: upstream answered 502",
    )


def test_demo_endpoints_can_be_switched_off(client, settings):
    """With DEMO_ENDPOINTS off the demo URLs are 404s; health stays up."""
    from importlib import reload

    from django.urls import clear_url_caches

    import project.urls

    settings.DEMO_ENDPOINTS = False
    try:
        reload(project.urls)
        clear_url_caches()
        assert client.get("/demo/delay/?ms=1").status_code == 404
        assert client.get("/healthz").status_code == 200
    finally:
        settings.DEMO_ENDPOINTS = True
        reload(project.urls)
        clear_url_caches()


def test_bad_hosts_log_one_short_warning(client, caplog):
    """50 requests with a bad Host: one WARNING line without a traceback."""
    with caplog.at_level("INFO"):
        for _ in range(50):
            response = client.get("/healthz", headers={"host": "evil.example"})
            assert response.status_code == 400
    records = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert len(records) <= 1
    assert all(r.levelname == "WARNING" and not r.exc_info for r in records)
    assert all("\n" not in r.getMessage() for r in records)
