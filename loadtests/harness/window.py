"""Steady-state figures from cumulative stats snapshots.

Locust's stats are cumulative from the start of a run, ramp included. The
plugin snapshots them once a second (request and failure counts and the
response-time histogram of every endpoint); the difference of two snapshots is
exactly what happened between them, so percentiles and rates over any window
(the steady state after warm-up, one step of a step-load run) are exact, not
averages of averages. Pure Python, no locust import, so it is unit-tested.
"""

import math
from dataclasses import dataclass, field

AGGREGATED = "Aggregated"
# Every endpoint's answers but the refusals (their own entries, NAME shed).
ADMITTED = "Admitted"


@dataclass
class Counts:
    """Cumulative counts of one endpoint: requests, failures, histogram (ms -> n)."""

    requests: int = 0
    failures: int = 0
    histogram: dict[int, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    """Cumulative counts of every endpoint at time ``t`` (seconds), with ``users``."""

    t: float
    users: int
    entries: dict[str, Counts]


@dataclass
class EndpointStats:
    """One endpoint over one window."""

    requests: int
    failures: int
    seconds: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None = None

    @property
    def rps(self) -> float:
        """Requests (failed ones included) per second of the window."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok_rps(self) -> float:
        """Successful answers per second: refusals are their own entries
        (``NAME shed``) and failures are left out, so on a locustfile's own
        endpoint this is its 2xx answers a second."""
        if self.seconds <= 0:
            return 0.0
        return (self.requests - self.failures) / self.seconds

    @property
    def fail_ratio(self) -> float:
        """Failures / requests (0 when there were none)."""
        return self.failures / self.requests if self.requests else 0.0


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """Nearest-rank percentile of a histogram (value -> count); None when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def without(total: Counts, parts: list[Counts]) -> Counts:
    """``total`` less ``parts`` (counts and histograms, which Locust sums exactly)."""
    histogram = dict(total.histogram)
    for part in parts:
        for value, count in part.histogram.items():
            histogram[value] = histogram.get(value, 0) - count
    return Counts(
        total.requests - sum(part.requests for part in parts),
        total.failures - sum(part.failures for part in parts),
        {value: count for value, count in histogram.items() if count > 0},
    )


def _diff(end: Counts, start: Counts | None) -> Counts:
    if start is None:
        return end
    histogram = {
        value: count - start.histogram.get(value, 0)
        for value, count in end.histogram.items()
        if count - start.histogram.get(value, 0) > 0
    }
    return Counts(
        end.requests - start.requests, end.failures - start.failures, histogram
    )


def bounds(
    snapshots: list[Snapshot], start: float, end: float
) -> tuple[Snapshot, Snapshot] | None:
    """The first snapshot at or after ``start`` and the last at or before ``end``."""
    inside = [s for s in snapshots if start <= s.t <= end]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def window_stats(
    snapshots: list[Snapshot], start: float, end: float
) -> dict[str, EndpointStats]:
    """Per-endpoint stats of what happened between ``start`` and ``end``.

    Empty when fewer than two snapshots fall in the window.
    """
    pair = bounds(snapshots, start, end)
    if pair is None:
        return {}
    first, last = pair
    seconds = last.t - first.t
    result = {}
    for name, counts in last.entries.items():
        delta = _diff(counts, first.entries.get(name))
        result[name] = EndpointStats(
            requests=delta.requests,
            failures=delta.failures,
            seconds=seconds,
            p50_ms=percentile(delta.histogram, 0.50),
            p95_ms=percentile(delta.histogram, 0.95),
            p99_ms=percentile(delta.histogram, 0.99),
            max_ms=float(max(delta.histogram)) if delta.histogram else None,
        )
    return result


def stats_to_json(stats: dict[str, EndpointStats]) -> dict[str, dict]:
    """A JSON-able form of per-endpoint stats, with rps and fail_ratio spelled out."""
    return {
        name: {
            "requests": s.requests,
            "failures": s.failures,
            "seconds": round(s.seconds, 3),
            "rps": round(s.rps, 2),
            "ok_rps": round(s.ok_rps, 2),
            "fail_ratio": s.fail_ratio,
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "p99_ms": s.p99_ms,
            "max_ms": s.max_ms,
        }
        for name, s in stats.items()
    }


def stats_from_json(data: dict[str, dict]) -> dict[str, EndpointStats]:
    """Inverse of ``stats_to_json``."""
    return {
        name: EndpointStats(
            d["requests"],
            d["failures"],
            d["seconds"],
            d["p50_ms"],
            d["p95_ms"],
            d["p99_ms"],
            d.get("max_ms"),
        )
        for name, d in data.items()
    }
