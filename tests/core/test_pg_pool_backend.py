"""The pooled backend as Django code uses it, on a real PostgreSQL."""

import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import gevent
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection

from project.core.deadline import Deadline, deadline_scope
from project.core.pg_pool.errors import PoolTimeout
from project.core.pg_pool.pools import all_pools

pytestmark = pytest.mark.django_db(transaction=True)

_names = count()


def pooled_wrapper(name: str | None = None, **options):
    """A DatabaseWrapper on the test database, its own pool (own application_name)."""
    wrapper = connection.copy()
    wrapper.settings_dict["OPTIONS"].update(
        application_name=name or f"pool-test-{next(_names)}", **options
    )
    return wrapper


def one(wrapper, sql: str, params=()):
    """The first column of the first row of ``sql`` on ``wrapper``."""
    with wrapper.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def pool_of(wrapper):
    """The pool ``wrapper`` takes its connections from."""
    wrapper.ensure_connection()
    pool = wrapper._from_pool
    return pool


def test_settings_changed_in_place_reach_the_next_connection():
    """Parameters are derived once per settings, and again when they change,
    in place too (as tests and ``connection.copy()`` users do)."""
    wrapper = pooled_wrapper()
    first = pool_of(wrapper)
    wrapper.close()
    assert pool_of(wrapper) is first  # unchanged settings: the same pool
    wrapper.close()
    wrapper.settings_dict["OPTIONS"]["application_name"] = "pool-test-renamed"
    assert pool_of(wrapper) is not first
    assert one(wrapper, "SHOW application_name") == "pool-test-renamed"
    wrapper.close()


def test_session_changes_are_reset_before_the_next_user():
    """SET, temp tables, advisory locks, PREPARE and LISTEN stay with their user."""
    first = pooled_wrapper("pool-test-reset", pool_size=1)
    pid = one(first, "SELECT pg_backend_pid()")
    default_path = one(first, "SHOW search_path")
    with first.cursor() as cursor:
        cursor.execute("SET search_path TO pg_catalog")
        cursor.execute("SET statement_timeout = 1234")
        cursor.execute("CREATE TEMP TABLE leftover (x int)")
        cursor.execute("SELECT pg_advisory_lock(4242)")
        cursor.execute("PREPARE leftover_plan AS SELECT 1")
        cursor.execute("LISTEN leftover_channel")
    pool = first._from_pool
    resets = pool.stats.resets
    first.close()
    assert pool.stats.resets == resets + 1

    second = pooled_wrapper("pool-test-reset", pool_size=1)
    assert one(second, "SELECT pg_backend_pid()") == pid  # the same session, reused
    assert one(second, "SHOW search_path") == default_path
    assert one(second, "SHOW statement_timeout") == "30s"  # the service's default
    assert one(second, "SELECT to_regclass('pg_temp.leftover')") is None
    assert (
        one(
            second,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid()",
        )
        == 0
    )
    assert one(second, "SELECT count(*) FROM pg_prepared_statements") == 0
    assert one(second, "SELECT count(*) FROM pg_listening_channels()") == 0
    second.close()


def test_clean_connection_goes_back_without_a_reset():
    """Plain queries and SET LOCAL leave nothing behind: no DISCARD ALL round trip."""
    wrapper = pooled_wrapper(pool_size=1)
    pool = pool_of(wrapper)
    pid = one(wrapper, "SELECT pg_backend_pid()")
    one(wrapper, "SET LOCAL statement_timeout = 50; SELECT 1")
    one(wrapper, "SELECT %s::int", [7])
    wrapper.close()
    assert pool.stats.resets == 0
    again = pooled_wrapper(wrapper.settings_dict["OPTIONS"]["application_name"])
    assert one(again, "SELECT pg_backend_pid()") == pid
    again.close()


def test_isolation_level_readonly_and_role_do_not_leak():
    """A SERIALIZABLE alias, a read-only session, an assumed role never reach others."""
    from django.db.backends.postgresql.psycopg_any import IsolationLevel

    name = "pool-test-isolation"
    with connection.cursor() as cursor:
        cursor.execute(
            "DO $$ BEGIN CREATE ROLE pool_test_role; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    serializable = pooled_wrapper(name, isolation_level=IsolationLevel.SERIALIZABLE)
    serializable.set_autocommit(False)
    assert one(serializable, "SHOW transaction_isolation") == "serializable"
    serializable.rollback()
    serializable.set_autocommit(True)
    serializable.close()
    role = pooled_wrapper(name, assume_role="pool_test_role")
    assert one(role, "SELECT current_user") == "pool_test_role"
    role.close()
    readonly = pooled_wrapper(name, pool_size=1)
    readonly.ensure_connection()
    readonly.connection.set_session(readonly=True)
    assert one(readonly, "SHOW transaction_read_only") == "on"
    readonly.close()

    plain = pooled_wrapper(name, pool_size=1)
    plain.set_autocommit(False)
    assert one(plain, "SHOW transaction_isolation") == "read committed"
    assert one(plain, "SHOW transaction_read_only") == "off"
    assert one(plain, "SELECT current_user") == connection.settings_dict["USER"]
    plain.rollback()
    plain.set_autocommit(True)
    plain.close()


def test_invalid_isolation_level_is_improperly_configured_and_loses_no_slot():
    """An invalid option is ImproperlyConfigured every time, never a pool timeout."""
    for _ in range(3):  # more attempts than the pool has slots
        wrapper = pooled_wrapper("pool-test-invalid", pool_size=2, isolation_level=-1)
        with pytest.raises(ImproperlyConfigured, match="Invalid transaction isolation"):
            wrapper.ensure_connection()
        wrapper.close()
    valid = pooled_wrapper("pool-test-invalid", pool_size=2)
    assert one(valid, "SELECT 1") == 1
    valid.close()
    invalid_pools = [
        pool for key, pool in all_pools().items() if ("_isolation_level", "-1") in key
    ]
    assert invalid_pools and all(pool.stats.in_use == 0 for pool in invalid_pools)


def test_failed_role_gives_the_connection_back():
    """A failure after checkout (SET ROLE to a missing role) returns the slot."""
    wrapper = pooled_wrapper("pool-test-role", pool_size=1, assume_role="no_such_role")
    for _ in range(2):
        with pytest.raises(Exception, match="no_such_role"):
            wrapper.connect()
    assert wrapper.connection is None
    plain = pooled_wrapper("pool-test-role", pool_size=1)
    assert one(plain, "SELECT 1") == 1
    plain.close()


def test_connection_left_open_by_an_ended_greenlet_is_reclaimed():
    """A greenlet that ends without closing its connection does not keep the slot."""
    name = "pool-test-leak"

    def forget_to_close():
        wrapper = pooled_wrapper(name, pool_size=1)
        one(wrapper, "SELECT 1")
        return (
            wrapper  # still referenced: reclaiming must not rely on garbage collection
        )

    leaked = gevent.spawn(forget_to_close)
    leaked.join()
    started = time.monotonic()
    wrapper = pooled_wrapper(name, pool_size=1)
    assert one(wrapper, "SELECT 1") == 1
    assert time.monotonic() - started < 2.5
    assert wrapper._from_pool.stats.reclaimed == 1
    wrapper.close()


def test_thread_pool_executor_tasks_do_not_shrink_the_pool():
    """ORM use in ThreadPoolExecutor threads that end: their connections come back."""
    name = "pool-test-executor"
    probe = pooled_wrapper(name, pool_size=2)
    pool = pool_of(probe)
    probe.close()

    def task(_):
        wrapper = pooled_wrapper(name, pool_size=2)
        return one(wrapper, "SELECT 1")

    for _ in range(3):  # 3 rounds x 2 threads on a pool of 2
        with ThreadPoolExecutor(max_workers=2) as executor:
            assert list(executor.map(task, range(2))) == [1, 1]
    wrapper = pooled_wrapper(name, pool_size=2)
    assert one(wrapper, "SELECT 1") == 1
    wrapper.close()
    assert pool.stats.reclaimed >= 4
    assert pool.stats.in_use == 0


def test_checkout_waits_no_longer_than_the_deadline():
    """With the pool full, a checkout under a 300 ms deadline fails in about 300 ms."""
    name = "pool-test-deadline"
    holder = pooled_wrapper(name, pool_size=1)
    holder.ensure_connection()
    waiter = pooled_wrapper(name, pool_size=1)
    started = time.monotonic()
    with deadline_scope(Deadline(0.3)):
        with pytest.raises(OperationalError) as raised:
            waiter.ensure_connection()
    elapsed = time.monotonic() - started
    assert isinstance(raised.value.__cause__, PoolTimeout)
    assert 0.25 <= elapsed < 0.8
    holder.close()
    assert one(waiter, "SELECT 1") == 1
    waiter.close()


def test_unusable_connection_closed_by_django_is_discarded():
    """A connection Django closed after a failed health check is not reused."""
    wrapper = pooled_wrapper("pool-test-health", pool_size=2)
    wrapper.settings_dict["CONN_HEALTH_CHECKS"] = True
    wrapper.settings_dict["CONN_MAX_AGE"] = None
    old = (pool_of(wrapper), wrapper.connection)[1]
    wrapper.health_check_done = False
    wrapper.is_usable = lambda: False
    wrapper.close_if_health_check_failed()
    del wrapper.is_usable
    wrapper.ensure_connection()
    assert wrapper.connection is not old and old.closed
    wrapper.close()
