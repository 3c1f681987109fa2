"""``[aggregations.NAME]`` tables: parameters and sources."""

import re
from collections.abc import Mapping
from typing import Any, TypedDict

from project.http.errors import ApiError

from ..declarations import (
    PLACEHOLDER,
    Aggregation,
    HttpSource,
    IntParam,
    Param,
    Query,
    Source,
    SqlSource,
    StrParam,
    Upstream,
)
from ..schema import AGGREGATION, PARAM, SOURCE
from .lines import KeyPath
from .reader import Reader, Table


def read_aggregation(
    reader: Reader,
    data: Any,
    path: KeyPath,
    upstreams: Mapping[str, Upstream],
    queries: Mapping[str, Query],
) -> Aggregation:
    """An aggregation; its sources may only use declared parameters."""
    name = reader.name(path)
    table = reader.open(data, path, AGGREGATION)
    deadline_ms = table.integer("deadline_ms")
    params = {
        key: read_param(reader, value, (*path, "params", key))
        for key, value in table.table("params").items()
    }
    sources_data = table.table("sources")
    if not sources_data:
        raise reader.fail((*path, "sources"), "declare at least one source")
    sources = tuple(
        read_source(reader, value, (*path, "sources", key), params, upstreams, queries)
        for key, value in sources_data.items()
    )
    return Aggregation(
        name=name,
        deadline_ms=deadline_ms,
        max_deadline_ms=table.integer(
            "max_deadline_ms", default=deadline_ms, low=deadline_ms
        ),
        params=params,
        sources=sources,
    )


def read_param(reader: Reader, data: Any, path: KeyPath) -> Param:
    """A request parameter: ``{ type = "int", min, max }`` or ``{ type = "str" }``."""
    name = reader.name(path)
    table = reader.open(data, path, PARAM)
    kind = table.choice("type")
    required = table.boolean("required")
    param: Param = (
        _int_param(table, name, required)
        if kind == "int"
        else _str_param(table, name, required)
    )
    if "default" not in table.data:
        return param
    if required:
        raise table.fail("default", "a required parameter has no default")
    default = table.data["default"]
    if isinstance(default, bool) or not isinstance(default, int | str):
        raise table.fail("default", f"must be a valid {kind}")
    try:
        return param.with_default(str(default))
    except ApiError as exc:
        raise table.fail("default", exc.message) from exc


def _int_param(table: Table, name: str, required: bool) -> IntParam:
    if "pattern" in table.data:
        raise table.fail("pattern", "only for type = 'str'")
    low = table.integer("min")
    return IntParam(name, required, low, table.integer("max", low=low))


def _str_param(table: Table, name: str, required: bool) -> StrParam:
    if "min" in table.data or "max" in table.data:
        raise table.fail(
            "min" if "min" in table.data else "max", "only for type = 'int'"
        )
    text = table.string("pattern")
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise table.fail("pattern", f"is not a valid regex: {exc}") from exc
    return StrParam(name, required, pattern)


class _Common(TypedDict):
    """The fields every kind of source has, but ``uses``."""

    name: str
    required: bool
    cache_ttl_s: float
    stale_ttl_s: float
    timeout_ms: int | None


def read_source(
    reader: Reader,
    data: Any,
    path: KeyPath,
    params: Mapping[str, Param],
    upstreams: Mapping[str, Upstream],
    queries: Mapping[str, Query],
) -> Source:
    """A source: an upstream (+ path, query) or a query (``sql``)."""
    name = reader.name(path)
    table = reader.open(data, path, SOURCE)
    common = _Common(
        name=name,
        required=table.boolean("required"),
        cache_ttl_s=table.number("cache_ttl_s"),
        stale_ttl_s=table.number("stale_ttl_s"),
        timeout_ms=(
            table.integer("timeout_ms") if "timeout_ms" in table.data else None
        ),
    )
    if ("upstream" in table.data) == ("sql" in table.data):
        raise reader.fail(path, "give either upstream (+ path) or sql, not both")
    if "sql" in table.data:
        source: Source = _sql_source(table, common, queries)
    else:
        source = _http_source(table, common, upstreams)
    _check_uses(table, source, params)
    return source


def _sql_source(
    table: Table, common: _Common, queries: Mapping[str, Query]
) -> SqlSource:
    for key in ("path", "query"):
        if key in table.data:
            raise table.fail(key, "only for upstream sources")
    query_name = table.string("sql")
    if query_name not in queries:
        raise table.fail("sql", f"unknown query {query_name!r}")
    query = queries[query_name]
    return SqlSource(**common, query=query, uses=frozenset(query.params))


def _http_source(
    table: Table, common: _Common, upstreams: Mapping[str, Upstream]
) -> HttpSource:
    upstream = table.string("upstream")
    if upstream not in upstreams:
        raise table.fail("upstream", f"unknown upstream {upstream!r}")
    template = table.string("path")
    if not template.startswith("/") or any(c in template for c in "?#\\ "):
        raise table.fail("path", "must start with / and have no query, # or spaces")
    uses = set(_placeholders(table, template, (*table.path, "path")))
    query_path = (*table.path, "query")
    query_args = []
    for key, value in table.table("query").items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise table.reader.fail((*query_path, key), "must be a string or integer")
        uses |= set(_placeholders(table, str(value), (*query_path, key)))
        query_args.append((key, str(value)))
    return HttpSource(
        **common,
        upstream=upstreams[upstream],
        path=template,
        query_args=tuple(query_args),
        uses=frozenset(uses),
    )


def _placeholders(table: Table, template: str, path: KeyPath) -> list[str]:
    rest = PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        raise table.reader.fail(path, "unbalanced { or }")
    names = PLACEHOLDER.findall(template)
    for name in names:
        if not table.reader.is_name(name):
            raise table.reader.fail(path, f"bad placeholder {{{name}}}")
    return names


def _check_uses(table: Table, source: Source, params: Mapping[str, Param]) -> None:
    # An SQL source's parameters are named by its query: point at its sql key.
    path = (*table.path, "sql") if isinstance(source, SqlSource) else table.path
    for name in sorted(source.uses):
        if name not in params:
            raise table.reader.fail(path, f"uses undeclared parameter {name!r}")
        param = params[name]
        if source.required and not param.required and param.default is None:
            raise table.reader.fail(
                path,
                f"a required source cannot use {name!r}, which is optional "
                "without a default",
            )
