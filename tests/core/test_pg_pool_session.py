"""Which statements mark a pooled connection as needing a session reset."""

import pytest

from project.core.pg_pool.session import changes_session


@pytest.mark.parametrize(
    "sql",
    [
        "SET search_path TO other",
        "set statement_timeout = 0",
        "SET SESSION AUTHORIZATION someone",
        "SET ROLE reporting",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SELECT 1; SET work_mem = '1GB'",
        "/* tagged */ SET x.y = 1",
        "-- why\nSET x.y = 1",
        "LISTEN jobs",
        "PREPARE plan AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "CREATE TEMP TABLE t (x int)",
        "create temporary view v as select 1",
        "SELECT * INTO TEMP t FROM x",
        "SELECT set_config('app.tenant', '7', false)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock_shared(1)",
        "LOAD 'auto_explain'",
        "DO $$ BEGIN PERFORM 1; END $$",
        "CALL refresh_everything()",
        b"SET search_path TO other",
    ],
)
def test_session_changes_are_noticed(sql):
    """Statements whose effect outlives the transaction mark the connection."""
    assert changes_session(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SET LOCAL statement_timeout = 50; SELECT pg_sleep(0.01)",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET CONSTRAINTS ALL DEFERRED",
        'UPDATE "app_item" SET "name" = %s WHERE "id" = %s',
        'SELECT "temp", "settings" FROM "weather"',
        "SELECT pg_advisory_xact_lock(1)",
        'INSERT INTO "t" ("x") VALUES (%s) RETURNING "id"',
    ],
)
def test_plain_statements_cost_no_reset(sql):
    """ORM statements and transaction-scoped settings leave the connection clean."""
    assert not changes_session(sql)


def test_verdicts_are_remembered_for_short_texts_only():
    """A repeated statement's verdict is looked up; a long text is scanned each
    time and never kept (its session change still noticed)."""
    from project.core.pg_pool.session import _text_changes_session

    _text_changes_session.cache_clear()
    assert not changes_session("SELECT %s::int")
    assert not changes_session("SELECT %s::int")
    assert _text_changes_session.cache_info().hits == 1
    rows = ", ".join(["(%s, %s)"] * 1000)
    assert not changes_session(f"INSERT INTO t (a, b) VALUES {rows}")
    assert changes_session(f"INSERT INTO t (a, b) VALUES {rows}; SET work_mem = '1GB'")
    assert _text_changes_session.cache_info().currsize == 1
