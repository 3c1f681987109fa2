"""Running one source live: an HTTP GET through its upstream's guard, or a query."""

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import gevent

from project.core.deadline import Deadline
from project.core.outbound import Response, call_upstream
from project.core.resilience import (
    Bulkhead,
    RetryBudget,
    UpstreamBreaker,
)
from project.core.sql import run_query, with_own_connection
from project.core.status import Status

from .declarations import (
    PLACEHOLDER,
    HttpSource,
    ParamValues,
    Source,
    SqlSource,
    Upstream,
)
from .results import SourceResult

logger = logging.getLogger(__name__)

# What identifies a live call: identical ones in flight are shared, and it
# keys the cache. ("http", upstream, target) or ("sql", query, bound values).
CallKey = tuple[str, str, str]


class _SourceTimeout(Exception):
    """Raised by a source's own ``gevent.Timeout``; never escapes the source."""


@dataclass
class UpstreamState:
    """One upstream's resilience state in this worker."""

    bulkhead: Bulkhead
    breaker: UpstreamBreaker
    budget: RetryBudget

    @classmethod
    def for_upstream(cls, upstream: Upstream) -> "UpstreamState":
        """Fresh state from the upstream's declared settings."""
        return cls(
            bulkhead=Bulkhead(upstream.bulkhead, name=upstream.name),
            breaker=UpstreamBreaker(upstream.breaker, name=upstream.name),
            budget=RetryBudget(upstream.retry, name=upstream.name),
        )


@dataclass(frozen=True)
class LiveCall:
    """A source's call with the request's values filled in, not yet made."""

    key: CallKey
    run: Callable[[], SourceResult]


def call_timeout(cap_ms: int | None, deadline: Deadline, margin_s: float) -> float:
    """A call's timeout: ``cap_ms`` (if any) within the deadline, less the margin."""
    return deadline.timeout(
        None if cap_ms is None else cap_ms / 1000.0, margin_s=margin_s
    )


class SourceRunner:
    """Makes sources' live calls; holds every upstream's state in this worker."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        margin_s: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.states = {
            name: UpstreamState.for_upstream(upstream)
            for name, upstream in upstreams.items()
        }
        self.margin_s = margin_s
        self.rng = rng

    def live_call(
        self, source: Source, values: ParamValues, deadline: Deadline
    ) -> LiveCall:
        """``source``'s call for these parameter values, under ``deadline``."""
        if isinstance(source, HttpSource):
            target = http_target(source, values)
            return LiveCall(
                ("http", source.upstream.name, target),
                lambda: self.fetch_http(source, target, deadline),
            )
        args = [values[name] for name in source.query.params]
        return LiveCall(
            ("sql", source.query.name, repr(args)),
            lambda: self.fetch_sql(source, args, deadline),
        )

    def fetch_http(
        self, source: HttpSource, target: str, deadline: Deadline
    ) -> SourceResult:
        """GET ``target`` on the source's upstream, through its resilience state."""
        upstream = source.upstream
        state = self.states[upstream.name]
        result = call_upstream(
            upstream.base_url + target,
            parse=_body,
            deadline=deadline,
            bulkhead=state.bulkhead,
            breaker=state.breaker,
            budget=state.budget,
            timeout_s=(source.timeout_ms or upstream.timeout_ms) / 1000.0,
            margin_s=self.margin_s,
            headers=upstream.headers,
            rng=self.rng,
        )
        return SourceResult(
            result.status,
            value=result.value,
            attempts=result.attempts,
            error=result.error,
            retry_after_s=result.retry_after_s,
        )

    def fetch_sql(
        self, source: SqlSource, args: list[int | str], deadline: Deadline
    ) -> SourceResult:
        """Run the source's query on a connection of its own."""
        query = source.query
        timeout = call_timeout(
            source.timeout_ms or query.timeout_ms, deadline, self.margin_s
        )
        if timeout <= 0:
            return SourceResult(
                Status.TIMEOUT, error="no time left before the deadline"
            )
        try:
            # The gevent timeout also bounds waiting for a pooled connection;
            # statement_timeout stops the query on the server.
            with gevent.Timeout(timeout, _SourceTimeout):
                rows = with_own_connection(
                    lambda: run_query(query.sql, args, timeout=timeout, as_dicts=True)
                )
        except (TimeoutError, _SourceTimeout):
            return SourceResult(
                Status.TIMEOUT,
                attempts=1,
                error=f"no answer within {timeout * 1000:.0f} ms",
            )
        except Exception as exc:
            # Details (hosts, SQL) go to the log, not to clients.
            logger.warning("query %s failed: %r", query.name, exc)
            return SourceResult(
                Status.ERROR, attempts=1, error=f"query failed ({type(exc).__name__})"
            )
        return SourceResult(Status.OK, value=rows, attempts=1)


def http_target(source: HttpSource, values: ParamValues) -> str:
    """Path and query with the parameters filled in, each value URL-encoded."""
    path = PLACEHOLDER.sub(
        lambda match: quote(str(values[match.group(1)]), safe=""), source.path
    )
    query = [
        (key, PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template))
        for key, template in source.query_args
    ]
    return f"{path}?{urlencode(query)}" if query else path


def _body(response: Response) -> Any:
    """JSON (strictly; ``UpstreamInvalidJSON`` when broken) or text, by content type."""
    if "json" in response.headers.get("Content-Type", ""):
        return response.json()
    return response.text
