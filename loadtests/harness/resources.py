"""What the server's resources did over one window, from ``scrape.Sample``s.

Counters and histograms are cumulative, so a window's figure is the
difference between its first and last samples (quantiles of that difference
are exact to a bucket, as Prometheus' ``histogram_quantile``); gauges are the
highest value any sample in the window saw. Worker CPU comes from /proc, so
it is known even when ``/metrics`` is not, and unknown when no pid was given
to sample it from. Pure functions, unit-tested.
"""

import math
from collections.abc import Iterable

from loadtests.harness.scrape import Metrics, Sample

LOOP_LAG = "gd_event_loop_lag_seconds"
CHECKOUT_WAIT = "gd_db_pool_checkout_wait_seconds"
POOL_SIZE = "gd_db_pool_size"
POOL_CONNECTIONS = "gd_db_pool_connections"
POOL_WAITING = "gd_db_pool_waiting"
UPSTREAM_CONNECTIONS = "gd_upstream_connections"
BULKHEAD = "gd_upstream_bulkhead_in_use"
BREAKER_TRANSITIONS = "gd_upstream_breaker_transitions_total"
# The HPA's metric (deploy/kubernetes/base/autoscaling.yaml).
LOOP_BUSY = "gd_admission_loop_busy_ratio"


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets, ``+Inf`` last.

    Linear interpolation inside the bucket the rank falls in, from the previous
    bound (0 for the first); a rank in the ``+Inf`` bucket gives the highest
    finite bound. None when there are no observations.
    """
    if not buckets or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == math.inf:
                return lower if len(buckets) > 1 else None
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None


def buckets(metrics: Metrics, name: str) -> dict[float, float]:
    """A histogram's cumulative buckets (le -> count), summed over its labels."""
    out: dict[float, float] = {}
    for labels, value in metrics.get(name + "_bucket", []):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def delta_quantile(q: float, first: Metrics, last: Metrics, name: str) -> float | None:
    """The ``q`` quantile of what histogram ``name`` observed between two scrapes."""
    start, end = buckets(first, name), buckets(last, name)
    # Clamped: a bucket never shrinks unless the server restarted.
    delta = [(le, max(0.0, count - start.get(le, 0.0))) for le, count in end.items()]
    return histogram_quantile(q, sorted(delta))


def total(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None if none."""
    values = [
        value
        for have, value in metrics.get(name, [])
        if all(have.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def by_label(metrics: Metrics, name: str, label: str, **labels: str) -> dict:
    """``name``'s values keyed by one label, among samples matching ``labels``."""
    return {
        have.get(label, ""): value
        for have, value in metrics.get(name, [])
        if all(have.get(k) == v for k, v in labels.items())
    }


def highest(values: Iterable[float | None]) -> float | None:
    """The largest value that is not None; None when there is none."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def cpu_cores(samples: list[Sample], proxy: bool = False) -> float | None:
    """Cores the workers (``proxy``: the proxy's processes) kept busy on average
    between the first and last sample; None when they were not sampled."""
    if len(samples) < 2 or samples[-1].t <= samples[0].t:
        return None
    first, last = (s.proxy if proxy else s.cpu for s in (samples[0], samples[-1]))
    if not last:
        return None
    # Per pid: a worker started in the window (recycled) counts from zero.
    used = sum(max(0.0, s - first.get(pid, 0.0)) for pid, s in last.items())
    return used / (samples[-1].t - samples[0].t)


def proxy_ms_per_request(proxy_cores: float | None, rps: float) -> float | None:
    """CPU ms the proxy spent per request it passed on.

    Its CPU seconds over a window divided by the requests in that window, as
    rates (CPU seconds a second over requests a second) so that the scrapes'
    span and the load generator's window need not be the same length. None
    when the proxy was not sampled or nothing passed.
    """
    if proxy_cores is None or rps <= 0:
        return None
    return 1000.0 * proxy_cores / rps


def host_busy(samples: list[Sample]) -> float | None:
    """The host's busy fraction of all its cores between the first and last sample."""
    ends = [s.host for s in samples if s.host is not None]
    if len(ends) < 2 or ends[-1][1] <= ends[0][1]:
        return None
    return (ends[-1][0] - ends[0][0]) / (ends[-1][1] - ends[0][1])


def _mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None; None when there is none."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def metric_figures(scraped: list[Metrics]) -> dict:
    """The /metrics figures of a window's scrapes (at least one)."""
    first, last = scraped[0], scraped[-1]
    lag = delta_quantile(0.99, first, last, LOOP_LAG)
    wait = delta_quantile(0.95, first, last, CHECKOUT_WAIT)
    upstream_open = [
        by_label(m, UPSTREAM_CONNECTIONS, "upstream", state="open") for m in scraped
    ]
    bulkhead = [by_label(m, BULKHEAD, "upstream") for m in scraped]
    opens = [total(m, BREAKER_TRANSITIONS, state="open") or 0.0 for m in (first, last)]
    return {
        "loop_lag_p99_ms": None if lag is None else lag * 1000,
        "db_wait_p95_ms": None if wait is None else wait * 1000,
        "db_in_use_max": highest(
            total(m, POOL_CONNECTIONS, state="in_use") for m in scraped
        ),
        "db_size": highest(total(m, POOL_SIZE) for m in scraped),
        # The mean over the window: what the adapter's 1-minute average sees.
        "loop_busy_mean": _mean(total(m, LOOP_BUSY) for m in scraped),
        "db_waiting_max": highest(total(m, POOL_WAITING) for m in scraped),
        # Summed over upstreams for the report; the busiest one for utilisation,
        # since HTTP_POOL_MAXSIZE bounds each upstream on its own.
        "upstream_open_max": highest(
            sum(u.values()) if u else None for u in upstream_open
        ),
        "upstream_busiest_max": highest(v for u in upstream_open for v in u.values()),
        "bulkhead_busiest_max": highest(v for b in bulkhead for v in b.values()),
        "breaker_opens": max(0.0, opens[1] - opens[0]) if len(scraped) > 1 else None,
    }


def window_figures(
    samples: list[Sample],
    start: float,
    end: float,
    *,
    cores: float,
    upstream_limit: float | None = None,
) -> dict:
    """Resource figures over the samples taken between ``start`` and ``end``.

    ``cores``: what the workers can use at most (one per worker, at most the
    machine's). ``upstream_limit``: sockets (and bulkhead slots) per upstream
    over all workers, HTTP_POOL_MAXSIZE x workers, when known. ``metrics`` is
    False when no sample in the window had /metrics ("no metrics");
    ``cpu_cores`` and ``proxy_cpu_cores`` are None when those processes were
    not sampled (no pid given).
    """
    inside = [s for s in samples if start <= s.t <= end]
    scraped = [s.metrics for s in inside if s.metrics is not None]
    busy = cpu_cores(inside)
    figures: dict = {
        "samples": len(inside),
        "metrics": bool(scraped),
        "cpu_cores": busy,
        "cpu_util": None if busy is None else busy / cores,
        "host_cpu_util": host_busy(inside),
        "proxy_cpu_cores": cpu_cores(inside, proxy=True),
        "upstream_limit": upstream_limit,
    }
    if scraped:
        figures.update(metric_figures(scraped))
    return figures
