"""The registry's schema, declared once: every table's keys, as data.

The registry reader validates against it (known keys, types, defaults,
ranges, choices) and README.md's "Registry keys" table is generated from it:
``python -m project.aggregation.schema`` prints that table (a test checks the
README still matches). Defaults of the resilience keys are the toolkit's own
(``project.core.resilience``), so the two cannot drift apart.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from project.core.resilience import BreakerConfig, BulkheadConfig, RetryConfig

BREAKER_DEFAULTS = BreakerConfig()
_RETRY = RetryConfig()
_BULKHEAD = BulkheadConfig()
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# A string parameter without its own pattern: one URL path segment's worth of
# plain characters (no dots, so never "." or "..").
DEFAULT_STR_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_TIMEOUT_MS = 600_000


class Kind(StrEnum):
    """What a key's value must be (as the README names it)."""

    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    STRING = "string"
    TABLE = "table"
    NAMES = "list of strings"
    INT_OR_STRING = "integer or string"


@dataclass(frozen=True)
class Key:
    """One key of a table: its type, default, allowed values and meaning.

    ``default_doc`` and ``allowed_doc`` say in words what depends on other
    keys (the reader supplies those values); otherwise the README shows
    ``default``, ``choices`` or ``low`` to ``high``.
    """

    name: str
    kind: Kind
    doc: str
    default: int | float | bool | str | None = None
    required: bool = False
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[str, ...] = ()
    default_doc: str = ""
    allowed_doc: str = ""

    def default_text(self) -> str:
        """The README's "default" cell."""
        if self.required:
            return "required"
        if self.default_doc or self.default is None:
            return self.default_doc
        if isinstance(self.default, bool):
            return f"`{str(self.default).lower()}`"
        if isinstance(self.default, str):
            return f'`"{self.default}"`'
        return f"`{_number(self.default)}`"

    def allowed_text(self) -> str:
        """The README's "allowed" cell."""
        if self.allowed_doc:
            return self.allowed_doc
        if self.choices:
            return " or ".join(f'`"{choice}"`' for choice in self.choices)
        if math.isfinite(self.low) and math.isfinite(self.high):
            return f"{_number(self.low)} to {_number(self.high)}"
        return ""


@dataclass(frozen=True)
class Section:
    """One kind of table in the registry file, and its keys."""

    table: str
    keys: tuple[Key, ...]

    def __getitem__(self, name: str) -> Key:
        return next(key for key in self.keys if key.name == name)

    def names(self) -> frozenset[str]:
        """Every key this table may have."""
        return frozenset(key.name for key in self.keys)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _timeout(doc: str, default: int | None, default_doc: str = "") -> Key:
    return Key(
        "timeout_ms",
        Kind.INTEGER,
        doc,
        default,
        low=1,
        high=MAX_TIMEOUT_MS,
        default_doc=default_doc,
    )


ROOT = Section(
    "(top level)",
    (
        Key("upstreams", Kind.TABLE, "HTTP services sources may call, by name"),
        Key("queries", Kind.TABLE, "named SQL statements, by name"),
        Key("aggregations", Kind.TABLE, "the aggregations served, by name"),
    ),
)
UPSTREAM = Section(
    "[upstreams.NAME]",
    (
        Key("base_url", Kind.STRING, "absolute http(s) URL, no query; `${VAR}` or `${VAR:-default}` from the environment", required=True),  # noqa: E501
        _timeout("each attempt's timeout (never past the deadline)", 1000),
        Key("retries", Kind.INTEGER, "further attempts of a GET after a connection error, timeout or 500/502/503/504", _RETRY.retries, low=0, high=10),  # noqa: E501
        Key("backoff_ms", Kind.INTEGER, "full-jitter backoff before retry n: up to `backoff_ms` × 2^(n-1)...", _RETRY.backoff_ms, low=1, high=60_000),  # noqa: E501
        Key("backoff_max_ms", Kind.INTEGER, "...and never more than this", _RETRY.backoff_max_ms, low=1, high=MAX_TIMEOUT_MS),  # noqa: E501
        Key("retry_budget", Kind.NUMBER, "retries add at most this share of the upstream's calls...", _RETRY.budget_ratio, low=0.0, high=1.0),  # noqa: E501
        Key("retry_reserve", Kind.INTEGER, "...plus this many", _RETRY.budget_reserve, low=0, high=10_000),  # noqa: E501
        Key("bulkhead", Kind.INTEGER, "concurrent calls per worker; more are shed", _BULKHEAD.limit, low=1, high=100_000),  # noqa: E501
        Key("breaker", Kind.TABLE, "the circuit breaker: `[upstreams.NAME.breaker]`"),
        Key("headers", Kind.TABLE, "request headers; values may use `${VAR}` (e.g. an auth token)"),  # noqa: E501
    ),
)  # fmt: skip
BREAKER = Section(
    "[upstreams.NAME.breaker]",
    (
        Key("failure_rate", Kind.NUMBER, "opens when this share of the last `window` calls failed (a timeout is a failure)...", BREAKER_DEFAULTS.failure_rate, low=0.0, high=1.0),  # noqa: E501
        Key("slow_call_rate", Kind.NUMBER, "...or this share was slower than `slow_call_ms`", BREAKER_DEFAULTS.slow_call_rate, low=0.0, high=1.0),  # noqa: E501
        Key("slow_call_ms", Kind.INTEGER, "a call this slow counts as slow", low=1, high=MAX_TIMEOUT_MS, default_doc="the upstream's `timeout_ms`"),  # noqa: E501
        Key("window", Kind.INTEGER, "how many of the latest calls the rates are taken over", BREAKER_DEFAULTS.window, low=1, high=10_000),  # noqa: E501
        Key("min_calls", Kind.INTEGER, "calls in the window before the rates count", BREAKER_DEFAULTS.min_calls, low=1, high=10_000, default_doc=f"{BREAKER_DEFAULTS.min_calls}, at most `window`", allowed_doc="1 to `window`"),  # noqa: E501
        Key("open_ms", Kind.INTEGER, "how long it stays open before probes are let through", BREAKER_DEFAULTS.open_ms, low=1, high=3_600_000),  # noqa: E501
        Key("half_open_probes", Kind.INTEGER, "probes let through, and successes needed to close", BREAKER_DEFAULTS.half_open_probes, low=1, high=1000),  # noqa: E501
    ),
)  # fmt: skip
QUERY = Section(
    "[queries.NAME]",
    (
        Key("sql", Kind.STRING, "the statement, with `%s` placeholders (`%%` for a literal `%`)", required=True),  # noqa: E501
        Key("params", Kind.NAMES, "aggregation parameters bound to the placeholders, in order"),  # noqa: E501
        _timeout("the query's timeout (also its `statement_timeout`), never past the deadline", 1000),  # noqa: E501
    ),
)  # fmt: skip
AGGREGATION = Section(
    "[aggregations.NAME]",
    (
        Key("deadline_ms", Kind.INTEGER, "the deadline when the request sends no `X-Request-Timeout-Ms`", 1000, low=1, high=MAX_TIMEOUT_MS),  # noqa: E501
        Key("max_deadline_ms", Kind.INTEGER, "the longest `X-Request-Timeout-Ms` honoured; longer ones are capped to it", low=1, high=MAX_TIMEOUT_MS, default_doc="`deadline_ms`", allowed_doc=f"`deadline_ms` to {MAX_TIMEOUT_MS}"),  # noqa: E501
        Key("params", Kind.TABLE, "the request parameters: `[aggregations.NAME.params]`"),  # noqa: E501
        Key("sources", Kind.TABLE, "at least one: `[aggregations.NAME.sources.S]`", required=True),  # noqa: E501
    ),
)  # fmt: skip
PARAM = Section(
    "[aggregations.NAME.params] P = {...}",
    (
        Key("type", Kind.STRING, "what the value must be", "str", choices=("int", "str")),  # noqa: E501
        Key("required", Kind.BOOLEAN, "a request without it is a 400", False),
        Key("default", Kind.INT_OR_STRING, "the value when the request gives none (not with `required`)"),  # noqa: E501
        Key("min", Kind.INTEGER, "type int: the smallest value", INT_MIN, low=INT_MIN, high=INT_MAX, default_doc="-2^63", allowed_doc="int64"),  # noqa: E501
        Key("max", Kind.INTEGER, "type int: the largest value", INT_MAX, low=INT_MIN, high=INT_MAX, default_doc="2^63-1", allowed_doc="`min` to 2^63-1"),  # noqa: E501
        Key("pattern", Kind.STRING, "type str: a regex the whole value must match", DEFAULT_STR_PATTERN),  # noqa: E501
    ),
)  # fmt: skip
SOURCE = Section(
    "[aggregations.NAME.sources.S]",
    (
        Key("upstream", Kind.STRING, "the upstream to call (with `path`); or give `sql`"),  # noqa: E501
        Key("path", Kind.STRING, "the path on it, e.g. `/items/{id}`: `{P}` is parameter P, URL-encoded", default_doc="required with `upstream`"),  # noqa: E501
        Key("query", Kind.TABLE, "query arguments, e.g. `{ k = \"{P}\" }`"),
        Key("sql", Kind.STRING, "instead of `upstream`: a query's name; its `params` are bound"),  # noqa: E501
        Key("required", Kind.BOOLEAN, "its failure fails the request; an optional one only makes it partial", True),  # noqa: E501
        _timeout("a timeout of its own", None, "the upstream's or query's `timeout_ms`"),  # noqa: E501
        Key("cache_ttl_s", Kind.NUMBER, "seconds a good value is served from the cache (0: no cache)", 0.0, low=0.0, high=86_400.0),  # noqa: E501
        Key("stale_ttl_s", Kind.NUMBER, "seconds it is kept longer, served as `stale` when the live call fails", 300.0, low=0.0, high=604_800.0),  # noqa: E501
    ),
)  # fmt: skip
SECTIONS = (ROOT, UPSTREAM, BREAKER, QUERY, AGGREGATION, PARAM, SOURCE)


def markdown_table() -> str:
    """Every key of every table, as the Markdown table in README.md."""
    return "\n".join(_markdown_lines()) + "\n"


def _markdown_lines() -> Iterator[str]:
    yield "| table | key | type | default | allowed | meaning |"
    yield "| --- | --- | --- | --- | --- | --- |"
    for section in SECTIONS:
        for key in section.keys:
            cells = (
                f"`{section.table}`",
                f"`{key.name}`",
                key.kind.value,
                key.default_text(),
                key.allowed_text(),
                key.doc,
            )
            yield "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    print(markdown_table(), end="")
