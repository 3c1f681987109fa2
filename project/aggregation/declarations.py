"""What a registry file declares, as typed objects (built by ``registry``)."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Self

from project.core.resilience import BreakerConfig, BulkheadConfig, RetryConfig
from project.http.errors import ApiError
from project.http.params import checked_int

# ``{P}`` in a source's path or query: the value of parameter P.
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# The request's parameters once parsed: name → value (absent optional ones omitted).
ParamValues = Mapping[str, int | str]


@dataclass(frozen=True)
class Upstream:
    """An HTTP service sources may call, with its resilience settings."""

    name: str
    base_url: str
    timeout_ms: int
    headers: Mapping[str, str]
    retry: RetryConfig
    bulkhead: BulkheadConfig
    breaker: BreakerConfig


@dataclass(frozen=True)
class Query:
    """A named SQL statement; ``params``: aggregation parameters bound in order."""

    name: str
    sql: str
    params: tuple[str, ...]
    timeout_ms: int


@dataclass(frozen=True)
class IntParam:
    """A declared integer request parameter, in ``[minimum, maximum]``."""

    name: str
    required: bool
    minimum: int
    maximum: int
    default: int | None = None

    def parse(self, raw: str) -> int:
        """Return ``raw`` as an int in range, or raise a 400 naming the parameter."""
        return checked_int(raw, self.name, minimum=self.minimum, maximum=self.maximum)

    def with_default(self, raw: str) -> Self:
        """This parameter with ``raw`` (parsed as a request's value) as its default."""
        return replace(self, default=self.parse(raw))


@dataclass(frozen=True)
class StrParam:
    """A declared string request parameter; the whole value must match ``pattern``."""

    name: str
    required: bool
    pattern: re.Pattern[str]
    default: str | None = None

    def parse(self, raw: str) -> str:
        """Return ``raw`` if it matches, or raise a 400 naming the parameter."""
        if not self.pattern.fullmatch(raw):
            raise ApiError(
                f"{self.name} must match {self.pattern.pattern}",
                param=self.name,
                value=raw[:100],
            )
        return raw

    def with_default(self, raw: str) -> Self:
        """This parameter with ``raw`` (parsed as a request's value) as its default."""
        return replace(self, default=self.parse(raw))


Param = IntParam | StrParam


@dataclass(frozen=True, kw_only=True)
class BaseSource:
    """What every source of an aggregation has, whatever it calls.

    ``timeout_ms`` None: the upstream's or query's own. ``uses``: the
    parameters it needs.
    """

    name: str
    required: bool
    cache_ttl_s: float
    stale_ttl_s: float
    timeout_ms: int | None
    uses: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class HttpSource(BaseSource):
    """A GET of ``path`` with ``query_args`` on an upstream; ``{P}``: parameter P."""

    upstream: Upstream
    path: str
    query_args: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class SqlSource(BaseSource):
    """A named query, its parameters bound in order."""

    query: Query


Source = HttpSource | SqlSource


@dataclass(frozen=True)
class Aggregation:
    """A named set of sources fetched together under one deadline."""

    name: str
    deadline_ms: int
    max_deadline_ms: int
    params: Mapping[str, Param]
    sources: tuple[Source, ...]

    def parse_params(self, query: Mapping[str, list[str]]) -> dict[str, int | str]:
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
        values: dict[str, int | str] = {}
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
