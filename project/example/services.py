"""A price from an HTTP service and a stock count from PostgreSQL, at once."""

from typing import Any

from django.conf import settings

from project.core.deadline import Deadline
from project.core.fanout import Leg, LegResult, fan_out
from project.core.outbound import call_upstream
from project.core.per_process import PerProcess
from project.core.resilience import (
    BreakerConfig,
    BulkheadConfig,
    RetryConfig,
    make_guards,
)
from project.core.sql import run_query, with_own_connection
from project.core.status import Status

# The price service's bulkhead, breaker and retry budget: one set per worker.
prices = PerProcess(
    lambda: make_guards(
        name="prices",  # labels its metrics: gd_upstream_*{upstream="prices"}
        bulkhead=BulkheadConfig(limit=100),
        breaker=BreakerConfig(slow_call_ms=1000),
        retry=RetryConfig(retries=1),
    )
)


def product(*, sku: int, ms: int, deadline: Deadline) -> list[LegResult]:
    """The price (HTTP) and the stock (SQL) of ``sku``, each taking ``ms``."""

    def price(timeout: float) -> Any:
        url = f"{settings.DEMO_UPSTREAM_URL}/delay?ms={ms}&sku={sku}"
        result = call_upstream(
            url,
            parse=lambda r: r.json(),
            deadline=deadline,
            timeout_s=timeout,
            **prices.get(),
        )
        if result.status != Status.OK:
            raise RuntimeError(f"{result.status}: {result.error}")
        return result.value

    def stock(timeout: float) -> Any:
        sql = "SELECT %s %% 17, pg_sleep(%s / 1000.0)"
        query = lambda: run_query(sql, [sku, ms], timeout=timeout)  # noqa: E731
        return with_own_connection(query)[0][0]

    return fan_out([Leg("price", price), Leg("stock", stock)], deadline=deadline)
