"""The example endpoint (docs/add-an-endpoint.md): both legs at once."""

import time

import pytest

from devtools.ports import free_port
from project.example import services
from tests.helpers import BASE_DIR
from tests.metrics_samples import sample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_guards() -> None:
    """Each test starts with a closed breaker and an empty bulkhead."""
    services.prices.forget()


def test_price_and_stock_arrive_in_one_leg_time(client, upstream, settings):
    """Both 500 ms legs finish in well under the 1 s they would take in turn."""
    settings.DEMO_UPSTREAM_URL = upstream
    started = time.monotonic()
    response = client.get("/example/product/?sku=40&ms=500")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    legs = {leg["name"]: leg for leg in response.json()["legs"]}
    assert legs["price"]["status"] == "ok"
    assert legs["price"]["value"]["slept_ms"] == 500
    assert legs["stock"] == {**legs["stock"], "status": "ok", "value": 40 % 17}
    assert elapsed < 0.9, f"took {elapsed:.2f} s"


def test_a_dead_price_service_leaves_the_stock(client, settings):
    """The price service refuses connections: its leg is an error, stock still ok;
    after enough failures its breaker opens and the leg fails without a call."""
    settings.DEMO_UPSTREAM_URL = f"http://127.0.0.1:{free_port()}"
    for _ in range(12):
        legs = client.get("/example/product/?sku=1&ms=0").json()["legs"]
        assert [leg["status"] for leg in legs] == ["error", "ok"]
    assert legs[0]["error"].startswith("RuntimeError: circuit_open")
    refused = sample(
        "gd_upstream_calls_total", upstream="prices", outcome="circuit_open"
    )
    assert refused >= 1  # the guards' name labels their metrics


def test_the_deadline_bounds_both_legs(client, upstream, settings):
    """A 200 ms deadline against 2 s legs: 200 with both legs timed out, on time."""
    settings.DEMO_UPSTREAM_URL = upstream
    started = time.monotonic()
    response = client.get(
        "/example/product/?sku=3&ms=2000", HTTP_X_REQUEST_TIMEOUT_MS="200"
    )
    assert time.monotonic() - started < 1.0
    assert [leg["status"] for leg in response.json()["legs"]] == ["timeout", "timeout"]


@pytest.mark.parametrize("query", ["", "sku=0", "sku=x", "sku=1&sku=2", "sku=1&ms=-1"])
def test_bad_input_is_a_400_naming_the_parameter(client, query):
    response = client.get(f"/example/product/?{query}")
    assert response.status_code == 400
    assert response.json()["param"] in ("sku", "ms")


def test_the_guide_shows_the_code_as_it_is():
    """docs/add-an-endpoint.md quotes the example verbatim."""
    guide = (BASE_DIR / "docs" / "add-an-endpoint.md").read_text()
    blocks = guide.split("```python\n")[1:]
    quoted = [block.split("```", 1)[0] for block in blocks]
    example = BASE_DIR / "project" / "example"
    assert len(quoted) == 2
    assert quoted[0] in (example / "services.py").read_text()
    assert quoted[1] in (example / "views.py").read_text()
