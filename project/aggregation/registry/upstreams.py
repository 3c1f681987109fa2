"""``[upstreams.NAME]`` (with its breaker) and ``[queries.NAME]`` tables."""

import re
from typing import Any
from urllib.parse import urlsplit

from project.core.resilience import BreakerConfig, BulkheadConfig, RetryConfig

from ..declarations import Query, Upstream
from ..schema import BREAKER, BREAKER_DEFAULTS, QUERY, UPSTREAM
from .lines import KeyPath
from .reader import Reader, Table

_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def read_upstream(reader: Reader, data: Any, path: KeyPath) -> Upstream:
    """An upstream; ``${VAR}`` references in its URL and headers expanded."""
    name = reader.name(path)
    table = reader.open(data, path, UPSTREAM)
    base_url = _base_url(table)
    timeout_ms = table.integer("timeout_ms")
    headers = _headers(reader, table.table("headers"), (*path, "headers"))
    return Upstream(
        name=name,
        base_url=base_url,
        timeout_ms=timeout_ms,
        headers=headers,
        retry=RetryConfig(
            retries=table.integer("retries"),
            backoff_ms=table.integer("backoff_ms"),
            backoff_max_ms=table.integer("backoff_max_ms"),
            budget_ratio=table.number("retry_budget"),
            budget_reserve=table.integer("retry_reserve"),
        ),
        bulkhead=BulkheadConfig(limit=table.integer("bulkhead")),
        breaker=_breaker(
            reader.open(table.data.get("breaker", {}), (*path, "breaker"), BREAKER),
            timeout_ms,
        ),
    )


def _base_url(table: Table) -> str:
    raw = table.string("base_url")
    base_url = table.reader.expand_env(raw, (*table.path, "base_url")).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.fail("base_url", "must be an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise table.fail("base_url", "must not have a query or fragment")
    return base_url


def _headers(reader: Reader, headers: dict[str, Any], path: KeyPath) -> dict[str, str]:
    for header, value in headers.items():
        if not _HEADER_NAME.match(header):
            raise reader.fail((*path, header), "is not a valid header name")
        if not isinstance(value, str):
            raise reader.fail((*path, header), "must be a string")
    expanded = {
        header: reader.expand_env(value, (*path, header))
        for header, value in headers.items()
    }
    for header, value in expanded.items():
        if "\r" in value or "\n" in value:
            raise reader.fail((*path, header), "must not contain newlines")
    return expanded


def _breaker(table: Table, timeout_ms: int) -> BreakerConfig:
    window = table.integer("window")
    return BreakerConfig(
        failure_rate=table.number("failure_rate"),
        slow_call_rate=table.number("slow_call_rate"),
        slow_call_ms=table.integer("slow_call_ms", default=timeout_ms),
        window=window,
        min_calls=table.integer(
            "min_calls", default=min(BREAKER_DEFAULTS.min_calls, window), high=window
        ),
        open_ms=table.integer("open_ms"),
        half_open_probes=table.integer("half_open_probes"),
    )


def read_query(reader: Reader, data: Any, path: KeyPath) -> Query:
    """A named query; its ``%s`` placeholders must match its ``params``."""
    name = reader.name(path)
    table = reader.open(data, path, QUERY)
    sql = table.string("sql")
    params = table.data.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise table.fail("params", "must be a list of parameter names")
    placeholders = sql.replace("%%", "").count("%s")
    if placeholders != len(params) or "%(" in sql:
        raise table.fail(
            "sql", f"has {placeholders} %s placeholders for {len(params)} params"
        )
    return Query(
        name=name,
        sql=sql,
        params=tuple(params),
        timeout_ms=table.integer("timeout_ms"),
    )
