"""The aggregation registry: upstreams, named SQL queries and aggregations, from TOML.

The file is versioned with the code and validated as a whole when it is loaded
(at start-up): any problem raises ``RegistryError`` naming the file, the line
(when it can be found) and the dotted key, e.g.
``aggregations.toml:14: aggregations.profile.sources.user.upstream: unknown
upstream 'userz'``. Clients never supply a URL or SQL: they only fill in the
declared parameters, which are validated here (see ``Aggregation.parse_params``)
and URL-encoded or bound by the driver where they are used.

Values of ``base_url`` and ``headers`` may name environment variables, shell
style: ``${USERS_URL}`` or ``${USERS_URL:-http://127.0.0.1:9101}``; a secret
such as an auth header never has to be in the file.
"""

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError
from .params import checked_int

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ENV_REF = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")
# A string parameter without its own pattern: one URL path segment's worth of
# plain characters (no dots, so never "." or "..").
DEFAULT_STR_PATTERN = r"[A-Za-z0-9_-]{1,64}"
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class RegistryError(ValueError):
    """The registry file is invalid; the message names the line and key."""


@dataclass(frozen=True)
class BreakerConfig:
    """Circuit-breaker thresholds for one upstream (see ``resilience.breaker``)."""

    failure_rate: float
    slow_call_rate: float
    slow_call_ms: int
    window: int
    min_calls: int
    open_ms: int
    half_open_probes: int


@dataclass(frozen=True)
class Upstream:
    """An HTTP service sources may call, with its resilience settings."""

    name: str
    base_url: str
    timeout_ms: int
    retries: int
    backoff_ms: int
    backoff_max_ms: int
    retry_budget: float
    retry_reserve: int
    bulkhead: int
    breaker: BreakerConfig
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Query:
    """A named SQL statement; ``params``: aggregation parameters bound in order."""

    name: str
    sql: str
    params: tuple[str, ...]
    timeout_ms: int


@dataclass(frozen=True)
class Param:
    """A declared request parameter of an aggregation."""

    name: str
    type: str
    required: bool
    default: Any
    minimum: int
    maximum: int
    pattern: re.Pattern | None

    def parse(self, raw: str) -> Any:
        """Return ``raw`` converted and checked, or raise a 400 naming the parameter."""
        if self.type == "int":
            return checked_int(
                raw, self.name, minimum=self.minimum, maximum=self.maximum
            )
        if not self.pattern.fullmatch(raw):
            raise ApiError(
                f"{self.name} must match {self.pattern.pattern}",
                param=self.name,
                value=raw[:100],
            )
        return raw


@dataclass(frozen=True)
class Source:
    """One source of an aggregation: an HTTP path on an upstream, or a named query."""

    name: str
    required: bool
    cache_ttl_s: float
    stale_ttl_s: float
    timeout_ms: int | None
    upstream: str | None = None
    path: str = ""
    query_args: tuple[tuple[str, str], ...] = ()
    sql: str | None = None
    uses: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Aggregation:
    """A named set of sources fetched together under one deadline."""

    name: str
    deadline_ms: int
    max_deadline_ms: int
    params: Mapping[str, Param]
    sources: tuple[Source, ...]

    def parse_params(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """Validate a query string; return the values (absent optional ones omitted).

        Raises a 400 ``ApiError`` naming the parameter for an unknown, repeated,
        missing or invalid one.
        """
        unknown = sorted(set(query) - set(self.params))
        if unknown:
            raise ApiError(
                f"unknown parameter {unknown[0]!r}",
                param=unknown[0],
                allowed=sorted(self.params),
            )
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            given = query.get(name)
            if given and len(given) > 1:
                raise ApiError(f"{name} given more than once", param=name)
            if not given or given[0] == "":
                if param.required:
                    raise ApiError(f"{name} is required", param=name)
                if param.default is not None:
                    values[name] = param.default
                continue
            values[name] = param.parse(given[0])
        return values


@dataclass(frozen=True)
class Registry:
    """Everything declared in one registry file."""

    upstreams: Mapping[str, Upstream] = field(default_factory=dict)
    queries: Mapping[str, Query] = field(default_factory=dict)
    aggregations: Mapping[str, Aggregation] = field(default_factory=dict)


def load_registry(
    path: str | Path, environ: Mapping[str, str] | None = None
) -> Registry:
    """Read and validate the registry at ``path``; raise ``RegistryError`` if bad."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistryError(
            f"{path}: cannot read the registry: {exc.strerror}"
        ) from exc
    return parse_registry(text, source=str(path), environ=environ)


def parse_registry(
    text: str, *, source: str = "<registry>", environ: Mapping[str, str] | None = None
) -> Registry:
    """Validate registry TOML ``text`` (``source`` names it in error messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: invalid TOML: {exc}") from exc
    reader = _Reader(text, source, os.environ if environ is None else environ)
    return reader.registry(data)


class _Reader:
    """Walks the parsed TOML, checking every key; errors name file, line and key."""

    def __init__(self, text: str, source: str, environ: Mapping[str, str]) -> None:
        self.lines = text.splitlines()
        self.origin = source
        self.environ = environ

    # --- errors ---------------------------------------------------------------

    def fail(self, path: tuple[str, ...], problem: str) -> RegistryError:
        line = self._line_of(path)
        where = f"{self.origin}:{line}" if line else self.origin
        return RegistryError(f"{where}: {'.'.join(path)}: {problem}")

    def _line_of(self, path: tuple[str, ...]) -> int | None:
        """Best-effort line of ``path``: its ``key =`` line, else the closest one.

        Ranks: the key itself; its table's header; the (inline or dotted) key
        holding it, nearer first; any key of the same name.
        """
        table: tuple[str, ...] = ()
        best: tuple[int, int] | None = None

        def consider(rank: int, number: int) -> None:
            nonlocal best
            if best is None or rank < best[0]:
                best = (rank, number)

        for number, line in enumerate(self.lines, 1):
            header = _HEADER.match(line)
            if header:
                table = _key_parts(header.group(1))
                if table == path:
                    consider(1, number)
                continue
            key = _KEY_LINE.match(line)
            if not key:
                continue
            full = table + _key_parts(key.group(1))
            if full == path:
                consider(0, number)
            elif path[: len(full)] == full:
                consider(2 + len(path) - len(full), number)
            elif full[-1:] == path[-1:]:
                consider(100, number)
        return best[1] if best else None

    # --- typed getters ----------------------------------------------------------

    def table(self, data: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, "must be a table")
        return data

    def known(self, data: dict, path: tuple[str, ...], allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(
                    (*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )

    def integer(
        self,
        data: dict,
        path: tuple,
        key: str,
        default: int | None,
        low: int,
        high: int,
    ) -> int:
        value = data.get(key, default)
        if value is None:
            raise self.fail((*path, key), "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail((*path, key), "must be an integer")
        if not low <= value <= high:
            raise self.fail((*path, key), f"must be between {low} and {high}")
        return value

    def number(
        self, data: dict, path: tuple, key: str, default: float, low: float, high: float
    ) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail((*path, key), "must be a number")
        if not low <= value <= high:
            raise self.fail((*path, key), f"must be between {low} and {high}")
        return float(value)

    def string(self, data: dict, path: tuple, key: str, default: str | None) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail((*path, key), "is required")
        if not isinstance(value, str) or not value:
            raise self.fail((*path, key), "must be a non-empty string")
        return value

    def boolean(self, data: dict, path: tuple, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail((*path, key), "must be true or false")
        return value

    def name(self, path: tuple[str, ...]) -> str:
        if not _NAME.match(path[-1]):
            raise self.fail(path, "names are lowercase letters, digits, _ or -")
        return path[-1]

    def expand_env(self, value: str, path: tuple[str, ...]) -> str:
        def replace(match: re.Match) -> str:
            found = self.environ.get(match.group(1), "")
            if found:
                return found
            if match.group(2) is not None:
                return match.group(2)
            raise self.fail(path, f"environment variable {match.group(1)} is not set")

        return _ENV_REF.sub(replace, value)

    # --- sections ------------------------------------------------------------------

    def registry(self, data: dict) -> Registry:
        self.known(data, (), {"upstreams", "queries", "aggregations"})
        upstreams = {
            name: self.upstream(value, ("upstreams", name))
            for name, value in self.table(
                data.get("upstreams", {}), ("upstreams",)
            ).items()
        }
        queries = {
            name: self.query(value, ("queries", name))
            for name, value in self.table(data.get("queries", {}), ("queries",)).items()
        }
        aggregations = {
            name: self.aggregation(value, ("aggregations", name), upstreams, queries)
            for name, value in self.table(
                data.get("aggregations", {}), ("aggregations",)
            ).items()
        }
        return Registry(upstreams, queries, aggregations)

    def upstream(self, data: Any, path: tuple[str, ...]) -> Upstream:
        name = self.name(path)
        data = self.table(data, path)
        self.known(
            data,
            path,
            {
                "base_url", "timeout_ms", "retries", "backoff_ms", "backoff_max_ms",
                "retry_budget", "retry_reserve", "bulkhead", "breaker", "headers",
            },
        )  # fmt: skip
        base_url = self.expand_env(
            self.string(data, path, "base_url", None), (*path, "base_url")
        ).rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail((*path, "base_url"), "must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise self.fail((*path, "base_url"), "must not have a query or fragment")
        timeout_ms = self.integer(data, path, "timeout_ms", 1000, 1, 600_000)
        headers_path = (*path, "headers")
        headers = self.table(data.get("headers", {}), headers_path)
        for header, value in headers.items():
            if not _HEADER_NAME.match(header):
                raise self.fail((*headers_path, header), "is not a valid header name")
            if not isinstance(value, str):
                raise self.fail((*headers_path, header), "must be a string")
        headers = {
            header: self.expand_env(value, (*headers_path, header))
            for header, value in headers.items()
        }
        for header, value in headers.items():
            if "\r" in value or "\n" in value:
                raise self.fail((*headers_path, header), "must not contain newlines")
        return Upstream(
            name=name,
            base_url=base_url,
            timeout_ms=timeout_ms,
            retries=self.integer(data, path, "retries", 0, 0, 10),
            backoff_ms=self.integer(data, path, "backoff_ms", 20, 1, 60_000),
            backoff_max_ms=self.integer(data, path, "backoff_max_ms", 1000, 1, 600_000),
            retry_budget=self.number(data, path, "retry_budget", 0.1, 0.0, 1.0),
            retry_reserve=self.integer(data, path, "retry_reserve", 10, 0, 10_000),
            bulkhead=self.integer(data, path, "bulkhead", 100, 1, 100_000),
            breaker=self.breaker(
                data.get("breaker", {}), (*path, "breaker"), timeout_ms
            ),
            headers=headers,
        )

    def breaker(
        self, data: Any, path: tuple[str, ...], timeout_ms: int
    ) -> BreakerConfig:
        data = self.table(data, path)
        self.known(
            data,
            path,
            {
                "failure_rate", "slow_call_rate", "slow_call_ms", "window",
                "min_calls", "open_ms", "half_open_probes",
            },
        )  # fmt: skip
        window = self.integer(data, path, "window", 20, 1, 10_000)
        return BreakerConfig(
            failure_rate=self.number(data, path, "failure_rate", 0.5, 0.0, 1.0),
            slow_call_rate=self.number(data, path, "slow_call_rate", 1.0, 0.0, 1.0),
            slow_call_ms=self.integer(
                data, path, "slow_call_ms", timeout_ms, 1, 600_000
            ),
            window=window,
            min_calls=self.integer(data, path, "min_calls", min(10, window), 1, window),
            open_ms=self.integer(data, path, "open_ms", 5000, 1, 3_600_000),
            half_open_probes=self.integer(data, path, "half_open_probes", 1, 1, 1000),
        )

    def query(self, data: Any, path: tuple[str, ...]) -> Query:
        name = self.name(path)
        data = self.table(data, path)
        self.known(data, path, {"sql", "params", "timeout_ms"})
        sql = self.string(data, path, "sql", None)
        params = data.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise self.fail((*path, "params"), "must be a list of parameter names")
        placeholders = sql.replace("%%", "").count("%s")
        if placeholders != len(params) or "%(" in sql:
            raise self.fail(
                (*path, "sql"),
                f"has {placeholders} %s placeholders for {len(params)} params",
            )
        return Query(
            name=name,
            sql=sql,
            params=tuple(params),
            timeout_ms=self.integer(data, path, "timeout_ms", 1000, 1, 600_000),
        )

    def param(self, data: Any, path: tuple[str, ...]) -> Param:
        name = self.name(path)
        data = self.table(data, path)
        self.known(data, path, {"type", "required", "default", "min", "max", "pattern"})
        kind = data.get("type", "str")
        if kind not in ("int", "str"):
            raise self.fail((*path, "type"), "must be 'int' or 'str'")
        required = self.boolean(data, path, "required", False)
        if kind == "int":
            if "pattern" in data:
                raise self.fail((*path, "pattern"), "only for type = 'str'")
            low = self.integer(data, path, "min", INT_MIN, INT_MIN, INT_MAX)
            high = self.integer(data, path, "max", INT_MAX, low, INT_MAX)
            pattern = None
        else:
            if "min" in data or "max" in data:
                raise self.fail(
                    (*path, "min" if "min" in data else "max"), "only for type = 'int'"
                )
            low, high = INT_MIN, INT_MAX
            text = self.string(data, path, "pattern", DEFAULT_STR_PATTERN)
            try:
                pattern = re.compile(text)
            except re.error as exc:
                raise self.fail(
                    (*path, "pattern"), f"is not a valid regex: {exc}"
                ) from exc
        param = Param(name, kind, required, None, low, high, pattern)
        if "default" not in data:
            return param
        if required:
            raise self.fail((*path, "default"), "a required parameter has no default")
        default = data["default"]
        if isinstance(default, bool) or not isinstance(default, int | str):
            raise self.fail((*path, "default"), f"must be a valid {kind}")
        try:
            return replace(param, default=param.parse(str(default)))
        except ApiError as exc:
            raise self.fail((*path, "default"), exc.message) from exc

    def aggregation(
        self,
        data: Any,
        path: tuple[str, ...],
        upstreams: Mapping[str, Upstream],
        queries: Mapping[str, Query],
    ) -> Aggregation:
        name = self.name(path)
        data = self.table(data, path)
        self.known(data, path, {"deadline_ms", "max_deadline_ms", "params", "sources"})
        deadline_ms = self.integer(data, path, "deadline_ms", 1000, 1, 600_000)
        params_path = (*path, "params")
        params = {
            key: self.param(value, (*params_path, key))
            for key, value in self.table(data.get("params", {}), params_path).items()
        }
        sources_path = (*path, "sources")
        sources_data = self.table(data.get("sources"), sources_path)
        if not sources_data:
            raise self.fail(sources_path, "declare at least one source")
        sources = tuple(
            self.source(value, (*sources_path, key), params, upstreams, queries)
            for key, value in sources_data.items()
        )
        return Aggregation(
            name=name,
            deadline_ms=deadline_ms,
            max_deadline_ms=self.integer(
                data, path, "max_deadline_ms", deadline_ms, deadline_ms, 600_000
            ),
            params=params,
            sources=sources,
        )

    def source(
        self,
        data: Any,
        path: tuple[str, ...],
        params: Mapping[str, Param],
        upstreams: Mapping[str, Upstream],
        queries: Mapping[str, Query],
    ) -> Source:
        name = self.name(path)
        data = self.table(data, path)
        self.known(
            data,
            path,
            {
                "upstream", "path", "query", "sql", "required",
                "cache_ttl_s", "stale_ttl_s", "timeout_ms",
            },
        )  # fmt: skip
        common = {
            "name": name,
            "required": self.boolean(data, path, "required", True),
            "cache_ttl_s": self.number(data, path, "cache_ttl_s", 0.0, 0.0, 86_400.0),
            "stale_ttl_s": self.number(
                data, path, "stale_ttl_s", 300.0, 0.0, 604_800.0
            ),
            "timeout_ms": (
                self.integer(data, path, "timeout_ms", None, 1, 600_000)
                if "timeout_ms" in data
                else None
            ),
        }
        if ("upstream" in data) == ("sql" in data):
            raise self.fail(path, "give either upstream (+ path) or sql, not both")
        if "sql" in data:
            for key in ("path", "query"):
                if key in data:
                    raise self.fail((*path, key), "only for upstream sources")
            query_name = self.string(data, path, "sql", None)
            if query_name not in queries:
                raise self.fail((*path, "sql"), f"unknown query {query_name!r}")
            uses = frozenset(queries[query_name].params)
            self.check_uses(uses, (*path, "sql"), params, common["required"])
            return Source(**common, sql=query_name, uses=uses)
        upstream = self.string(data, path, "upstream", None)
        if upstream not in upstreams:
            raise self.fail((*path, "upstream"), f"unknown upstream {upstream!r}")
        template = self.string(data, path, "path", None)
        if not template.startswith("/") or any(c in template for c in "?#\\ "):
            raise self.fail(
                (*path, "path"), "must start with / and have no query, # or spaces"
            )
        uses = set(self.placeholders(template, (*path, "path")))
        query_path = (*path, "query")
        query_args = []
        for key, value in self.table(data.get("query", {}), query_path).items():
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise self.fail((*query_path, key), "must be a string or integer")
            uses |= set(self.placeholders(str(value), (*query_path, key)))
            query_args.append((key, str(value)))
        self.check_uses(frozenset(uses), path, params, common["required"])
        return Source(
            **common,
            upstream=upstream,
            path=template,
            query_args=tuple(query_args),
            uses=frozenset(uses),
        )

    def placeholders(self, template: str, path: tuple[str, ...]) -> list[str]:
        names = PLACEHOLDER.findall(template)
        if PLACEHOLDER.sub("", template).count("{") or PLACEHOLDER.sub(
            "", template
        ).count("}"):
            raise self.fail(path, "unbalanced { or }")
        for name in names:
            if not _NAME.match(name):
                raise self.fail(path, f"bad placeholder {{{name}}}")
        return names

    def check_uses(
        self,
        uses: frozenset[str],
        path: tuple[str, ...],
        params: Mapping[str, Param],
        required: bool,
    ) -> None:
        for name in sorted(uses):
            if name not in params:
                raise self.fail(path, f"uses undeclared parameter {name!r}")
            param = params[name]
            if required and not param.required and param.default is None:
                raise self.fail(
                    path,
                    f"a required source cannot use {name!r}, which is optional "
                    "without a default",
                )


def _key_parts(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in dotted.split("."))
