"""The current request id: validation, scopes, fan-out legs, HTTP calls and SQL."""

import logging
import re

import pytest
import requests

from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out
from project.core.outbound.client import http_get
from project.core.request_context import (
    current_request_id,
    is_valid_request_id,
    new_request_id,
    request_id_scope,
    with_request_id_header,
    with_sql_comment,
)
from project.core.sql import run_query, with_own_connection
from project.server.log_filters import RequestIdFilter


@pytest.mark.parametrize(
    "value", ["a", "A-b_c.d:e", "0" * 64, "3f2b1c9e8d7a4b6c5e0f1a2b3c4d5e6f"]
)
def test_valid_ids(value):
    assert is_valid_request_id(value)


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 65, "a b", "a'b", "*/ DROP", "a/b", "é", "a\nb", "50%"],
)
def test_invalid_ids(value):
    assert not is_valid_request_id(value)


def test_new_ids_are_valid_and_distinct():
    """A new id is 32 lowercase hex digits, and never the last one again."""
    first, second = new_request_id(), new_request_id()
    assert is_valid_request_id(first) and re.fullmatch("[0-9a-f]{32}", first)
    assert first != second


def test_scope_sets_and_restores_and_refuses_an_invalid_id():
    assert current_request_id() is None
    with request_id_scope("outer"):
        with request_id_scope("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "outer"
    assert current_request_id() is None
    with pytest.raises(ValueError), request_id_scope("*/ x"):
        pass


def test_header_added_only_with_an_id_and_never_over_the_callers():
    assert with_request_id_header(None, None) is None
    assert with_request_id_header(None, "rid-1") == {"X-Request-ID": "rid-1"}
    given = {"Authorization": "Bearer t"}
    assert with_request_id_header(given, "rid-1") == {**given, "X-Request-ID": "rid-1"}
    assert given == {"Authorization": "Bearer t"}  # not changed in place
    own = {"x-request-id": "mine"}
    assert with_request_id_header(own, "rid-1") == own


def test_sql_comment_leads_str_and_bytes_only_in_a_request():
    assert with_sql_comment("SELECT 1") == "SELECT 1"
    with request_id_scope("rid-2"):
        assert with_sql_comment("SELECT 1") == "/* request_id='rid-2' */ SELECT 1"
        assert with_sql_comment(b"SELECT 1") == b"/* request_id='rid-2' */ SELECT 1"
        composed = object()
        assert with_sql_comment(composed) is composed


def test_fan_out_legs_run_under_the_request_id_and_log_it(caplog):
    """Each leg's greenlet sees the id, and its log records carry it."""
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO, logger="project.core.fanout")

    def failing(timeout: float) -> None:
        raise RuntimeError("boom")

    legs = [Leg("id", lambda timeout: current_request_id()), Leg("fails", failing)]
    with request_id_scope("rid-legs"):
        results = fan_out(legs, deadline=Deadline(5))
    assert results[0].value == "rid-legs"
    [record] = [r for r in caplog.records if "leg fails failed" in r.getMessage()]
    assert record.request_id == "rid-legs"
    assert fan_out(legs[:1], deadline=Deadline(5))[0].value is None


def test_http_get_sends_the_current_id(upstream, fresh_pools):
    with request_id_scope("rid-http"):
        sent = http_get(f"{upstream}/headers", timeout=5).json()
    assert sent["x-request-id"] == "rid-http"
    assert "x-request-id" not in http_get(f"{upstream}/headers", timeout=5).json()
    seen = requests.get(f"{upstream}/stats/request-ids", timeout=5).json()
    assert "rid-http" in seen["request_ids"]


@pytest.mark.django_db(transaction=True)
def test_queries_carry_the_id_in_a_leading_comment_with_parameters_unchanged():
    """The server sees the comment first; bound values arrive as they were."""
    sql = "SELECT current_query(), %s::text"
    with request_id_scope("rid-sql"):
        [(seen, value)] = run_query(sql, ["50% O'Brien */"])
    assert seen.startswith("/* request_id='rid-sql' */ SELECT current_query()")
    assert value == "50% O'Brien */"
    [(seen, _)] = run_query(sql, ["x"])
    assert seen.startswith("SELECT current_query()")


@pytest.mark.django_db(transaction=True)
def test_fan_out_sql_legs_carry_the_id():
    def query(timeout: float) -> str:
        return with_own_connection(lambda: run_query("SELECT current_query()")[0][0])

    with request_id_scope("rid-leg-sql"):
        [result] = fan_out([Leg("sql", query)], deadline=Deadline(5))
    assert result.value.startswith("/* request_id='rid-leg-sql' */ ")
