"""The work behind the reference endpoints, built on ``project.core``."""

import functools
import time
from typing import Any

from django.conf import settings

from project.core.deadline import Deadline
from project.core.fanout import Leg, LegResult, fan_out
from project.core.outbound.client import http_get
from project.core.sql import run_query, with_own_connection
from project.http.errors import ApiError


class UpstreamError(Exception):
    """The upstream answered, with an error status."""


SLOW_SQL = "SELECT pg_sleep(%s / 1000.0), %s::bigint * %s::bigint"


def sleep_for(*, ms: int, deadline: Deadline) -> None:
    """Sleep cooperatively (``time.sleep`` is patched to yield to the hub);
    a sleep that would outlast ``deadline`` ends at it with a 504."""
    seconds = ms / 1000.0
    if seconds <= deadline.remaining():
        time.sleep(seconds)
        return
    time.sleep(deadline.remaining())
    raise ApiError("the delay outlasts the request deadline", status=504)


def run_slow_query(*, x: int, ms: int, deadline: Deadline) -> int:
    """Run the slow-SQL probe and return ``x * x`` computed by PostgreSQL."""
    try:
        rows = run_query(SLOW_SQL, [ms, x, x], timeout=deadline.timeout())
    except TimeoutError as exc:
        raise ApiError(
            "query did not finish before the request deadline", status=504
        ) from exc
    return rows[0][1]


# Legs remembered by what they call (``ms`` takes at most ``MAX_MS`` + 1
# values): a leg holds no state of its own, and made per request, with its URL
# encoded, the legs were 0.8 % of a W1 worker (``profile_fanout``).
_LEGS_KEPT = 256


@functools.lru_cache(maxsize=_LEGS_KEPT)
def _http_leg(url: str) -> Leg:
    def call(timeout: float) -> dict[str, Any]:
        response = http_get(url, timeout=timeout)
        # Nothing follows redirects: a 3xx is not the answer we asked for.
        if response.status_code >= 300:
            raise UpstreamError(f"upstream answered {response.status_code}")
        return {"http_status": response.status_code}

    return Leg(name="http", call=call)


@functools.lru_cache(maxsize=_LEGS_KEPT)
def _sql_leg(ms: int) -> Leg:
    def call(timeout: float) -> dict[str, Any]:
        with_own_connection(
            lambda: run_query("SELECT pg_sleep(%s / 1000.0)", [ms], timeout=timeout)
        )
        return {"slept_ms": ms}

    return Leg(name="sql", call=call)


def fan_out_probe(
    *, http: int, sql: int, ms: int, deadline: Deadline
) -> list[LegResult]:
    """Run ``http`` upstream calls and ``sql`` queries of ``ms`` each, at once.

    The legs of a kind are one ``Leg`` repeated, made once per URL or ``ms``
    (``_http_leg``, ``_sql_leg``).
    """
    # ``ms`` is a validated int: its query needs no encoding.
    url = f"{settings.DEMO_UPSTREAM_URL}/delay?ms={ms}"
    legs = [_http_leg(url)] * http + [_sql_leg(ms)] * sql
    return fan_out(legs, deadline=deadline)
