import time

import pytest
from django.test import override_settings

from project.core import http_client
from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out
from project.core.http_client import get_session, http_get


def test_session_pool_is_sized_for_the_worker():
    """The shared session's pool holds HTTP_POOL_MAXSIZE connections per host."""
    http_client._session["pid"] = None
    with override_settings(HTTP_POOL_MAXSIZE=321):
        adapter = get_session().get_adapter("http://127.0.0.1/")
    assert adapter._pool_maxsize == 321
    assert get_session() is get_session()
    http_client._session["pid"] = None


def test_session_ignores_proxy_environment_unless_asked():
    """By default the session skips the per-call proxy/.netrc lookup."""
    http_client._session["pid"] = None
    assert get_session().trust_env is False
    http_client._session["pid"] = None
    with override_settings(HTTP_TRUST_ENV=True):
        assert get_session().trust_env is True
    http_client._session["pid"] = None


def test_gets_from_upstream(upstream):
    """Returns the upstream's response."""
    response = http_get(f"{upstream}/delay", params={"ms": 10}, timeout=2)
    assert response.status_code == 200
    assert response.json()["slept_ms"] == 10


def test_read_timeout_becomes_timeout_error(upstream):
    """An upstream slower than the timeout raises TimeoutError."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        http_get(f"{upstream}/delay", params={"ms": 2000}, timeout=0.2)
    assert time.monotonic() - started < 1.0


def test_connection_refused_is_an_error_not_a_hang():
    """A closed port fails at once, without naming the upstream's address."""
    from conftest import free_port

    port = free_port()
    with pytest.raises(ConnectionError) as caught:
        http_get(f"http://127.0.0.1:{port}/", timeout=2)
    assert str(port) not in str(caught.value)


def test_trickling_body_is_cut_at_the_deadline(upstream):
    """A trickling body is cut by the leg's total timeout, not per read."""

    def call(timeout: float) -> int:
        response = http_get(
            f"{upstream}/trickle",
            params={"chunks": 50, "interval_ms": 100},
            timeout=timeout,
        )
        return len(response.content)

    started = time.monotonic()
    results = fan_out([Leg("trickle", call)], deadline=Deadline(0.5), max_concurrency=1)
    assert time.monotonic() - started < 1.2
    assert results[0].status == "timeout"


def test_ten_upstream_calls_run_concurrently(upstream):
    """Ten 0.5 s upstream calls finish in under 2 s."""
    legs = [
        Leg(
            "http",
            lambda t: (
                http_get(f"{upstream}/delay", params={"ms": 500}, timeout=t).status_code
            ),
        )
        for _ in range(10)
    ]
    started = time.monotonic()
    results = fan_out(legs, deadline=Deadline(5), max_concurrency=100)
    assert time.monotonic() - started < 2.0
    assert [r.value for r in results] == [200] * 10
