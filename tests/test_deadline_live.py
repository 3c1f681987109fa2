"""The deadline a client sends, read once by a real gunicorn worker, in the view."""

import json

import gevent
import pytest

from tests.test_admission_live import timed_get

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def one_slot_server(start_gunicorn, test_database_url):
    """One worker admitting one request at a time, a later one waiting up to 2 s."""
    return start_gunicorn(
        test_database_url,
        SHED_MAX_LIMIT="1",
        SHED_MIN_LIMIT="1",
        SHED_QUEUE_TIMEOUT_MS="2000",
        SHED_QUEUE_TARGET_MS="5",
    )


def test_the_header_deadline_reaches_the_view_counted_from_arrival(one_slot_server):
    """The view's deadline is the header's 3000 ms, started when the worker read
    the request: the ~300 ms it waited for admission are already spent."""
    url = one_slot_server.url
    holder = gevent.spawn(timed_get, url, "/demo/delay/?ms=400")
    gevent.sleep(0.1)
    seconds, status, _, body = timed_get(
        url, "/demo/fan-out/?sql=1&ms=1", {"X-Request-Timeout-Ms": "3000"}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["deadline_ms"] == 3000
    assert [leg["status"] for leg in answer["legs"]] == ["ok"]
    assert 200 <= answer["elapsed_ms"] <= seconds * 1000
    assert holder.get(timeout=5)[1] == 200


@pytest.mark.parametrize("value", ["+100", "1e3", "0", "60001", "1 000"])
@pytest.mark.parametrize("path", ["/demo/delay/?ms=1", "/healthz"])
def test_an_invalid_header_is_a_400_naming_it_on_any_route(
    one_slot_server, path, value
):
    """What the worker could not read is answered by Django: JSON, request id."""
    _, status, headers, body = timed_get(
        one_slot_server.url, path, {"X-Request-Timeout-Ms": value}
    )
    assert status == 400
    assert json.loads(body)["param"] == "X-Request-Timeout-Ms"
    assert headers["X-Request-ID"]
