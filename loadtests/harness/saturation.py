"""Which resource saturates first: utilisations, thresholds and the knee's verdict.

Each resource's utilisation is a number in [0, 1+] computed from a step's
figures (``resources.window_figures``); it is saturated at or above its
threshold. Where a resource has no natural capacity (latencies), the
utilisation is the figure over its limit, so the threshold is 1:

=================  ===============================================  =========
resource           utilisation                                      threshold
=================  ===============================================  =========
CPU                workers' CPU / the cores they can use            0.90
CPU (host)         the host's busy fraction, counted only while     0.90
                   the event loop is late too
event loop         loop lag p99 / 50 ms                             1.0
DB pool            connections in use (max) / pool size             0.95
DB pool            checkout wait p95 / 10 ms                        1.0
upstream pool      busiest upstream's open sockets / (HTTP_POOL_    0.90
                   MAXSIZE x workers)
bulkhead           busiest upstream's calls in flight / (same)      0.90
breaker            1 when a breaker opened in the step, else 0      1.0
=================  ===============================================  =========

The workers share the host's cores with the load generator, the stub upstream
and PostgreSQL (and, on a shared machine, other people's runs), so they can be
short of CPU with their own share under 90 %. A busy host alone proves
nothing (it may be busy with the load generator while the workers wait on a
pool); a busy host *and* a late loop is a worker short of CPU, so the host
counts only with the loop lag past its limit. Loop lag with the CPU saturated
is the CPU's symptom and the CPU is named; alone, it means code holding the
loop (blocking calls, long CPU bursts).

The knee's bottleneck is the resource that reached its threshold in the
earliest step up to the one after the knee (the step that broke the SLO
usually shows the cause most clearly); ties go to the one furthest past its
threshold.
"""

from dataclasses import dataclass

LOOP_LAG_LIMIT_MS = 50.0
CHECKOUT_WAIT_LIMIT_MS = 10.0


@dataclass(frozen=True)
class Resource:
    """One utilisation: its key, plot label, what it makes a knee, its threshold.

    ``needs``: another resource that must be saturated too for this one to count.
    """

    key: str
    label: str
    bound: str
    threshold: float
    needs: str = ""


RESOURCES = [
    Resource("cpu", "worker CPU / worker cores", "CPU", 0.90),
    Resource("host_cpu", "host CPU busy", "CPU", 0.90, needs="loop_lag"),
    Resource("loop_lag", "loop lag p99 / 50 ms", "event-loop", 1.0),
    Resource("db_pool", "DB pool in use / size", "DB-pool", 0.95),
    Resource("db_wait", "DB checkout wait p95 / 10 ms", "DB-pool", 1.0),
    Resource("upstream_pool", "upstream sockets / pool max", "upstream-pool", 0.90),
    Resource("bulkhead", "bulkhead in use / max", "bulkhead", 0.90),
    Resource("breaker", "breaker opened", "breaker", 1.0),
]
# Reported together: a busy CPU and a late loop are one story.
COMPANIONS = {"CPU": ["event-loop"], "event-loop": ["CPU"]}
ORDER = ["CPU", "event-loop", "DB-pool", "upstream-pool", "bulkhead", "breaker"]


def ratio(part: float | None, whole: float | None) -> float | None:
    """part / whole, None when either is unknown or whole is not positive."""
    if part is None or not whole or whole <= 0:
        return None
    return part / whole


def utilisation(figures: dict) -> dict[str, float | None]:
    """Each resource's utilisation from a step's figures (None: unknown)."""
    lag, wait = figures.get("loop_lag_p99_ms"), figures.get("db_wait_p95_ms")
    limit = figures.get("upstream_limit")
    opens = figures.get("breaker_opens")
    return {
        "cpu": figures.get("cpu_util"),
        "host_cpu": figures.get("host_cpu_util"),
        "loop_lag": None if lag is None else lag / LOOP_LAG_LIMIT_MS,
        "db_pool": ratio(figures.get("db_in_use_max"), figures.get("db_size")),
        "db_wait": None if wait is None else wait / CHECKOUT_WAIT_LIMIT_MS,
        "upstream_pool": ratio(figures.get("upstream_busiest_max"), limit),
        "bulkhead": ratio(figures.get("bulkhead_busiest_max"), limit),
        "breaker": None if opens is None else float(opens > 0),
    }


def saturated(figures: dict) -> list[str]:
    """The bounds (``CPU``, ``DB-pool``, ...) at or past a threshold, most first."""
    use = utilisation(figures)
    reached = {
        r.key: use[r.key] / r.threshold
        for r in RESOURCES
        if use[r.key] is not None and use[r.key] >= r.threshold
    }
    over = [
        (reached[r.key], r.bound)
        for r in RESOURCES
        if r.key in reached and (not r.needs or r.needs in reached)
    ]
    bounds = list(dict.fromkeys(bound for _, bound in sorted(over, reverse=True)))
    if "CPU" in bounds and "event-loop" in bounds:
        bounds.remove("CPU")
        bounds.insert(bounds.index("event-loop"), "CPU")
    return bounds


def bottleneck(steps: list[dict], knee_index: int) -> tuple[str, int] | None:
    """The first bound to saturate up to the step after the knee, and that step."""
    for index, step in enumerate(steps[: knee_index + 2]):
        bounds = saturated(step.get("resources", {}))
        if bounds:
            return bounds[0], index
    return None


def percent(value: float) -> str:
    """0.98 -> '98 %'."""
    return f"{100 * value:.0f} %"


def details(figures: dict) -> dict[str, str]:
    """What each bound looked like in a step, in words (known figures only)."""
    use = utilisation(figures)
    out = {}
    workers, host = figures.get("cpu_util"), figures.get("host_cpu_util")
    if workers is not None or host is not None:
        parts = [
            "worker CPU not sampled"
            if workers is None
            else f"workers at {percent(workers)} CPU"
        ]
        parts += [] if host is None else [f"host {percent(host)} busy"]
        out["CPU"] = ", ".join(parts)
    if use["loop_lag"] is not None:
        out["event-loop"] = f"loop lag p99 {figures['loop_lag_p99_ms']:.0f} ms"
    if use["db_pool"] is not None or use["db_wait"] is not None:
        parts = []
        if use["db_pool"] is not None:
            parts.append(f"DB pool {percent(use['db_pool'])} used")
        if use["db_wait"] is not None:
            parts.append(f"checkout wait p95 {figures['db_wait_p95_ms']:.0f} ms")
        if figures.get("db_waiting_max"):
            parts.append(f"up to {figures['db_waiting_max']:.0f} waiting")
        out["DB-pool"] = "DB " * (use["db_pool"] is None) + ", ".join(parts)
    if use["upstream_pool"] is not None:
        out["upstream-pool"] = f"upstream pool {percent(use['upstream_pool'])} used"
    elif figures.get("upstream_open_max") is not None:
        out["upstream-pool"] = f"{figures['upstream_open_max']:.0f} upstream sockets"
    if use["bulkhead"] is not None:
        out["bulkhead"] = f"bulkhead {percent(use['bulkhead'])} used"
    if use["breaker"] is not None:
        opens = figures["breaker_opens"]
        out["breaker"] = f"{opens:.0f} breaker opens" if opens else "no breaker opened"
    return out


def verdict(steps: list[dict], knee: dict | None) -> str:
    """The sentence naming what the knee is bound by, with the knee's figures.

    E.g. "the knee at 60 users is CPU-bound: workers at 98 % CPU, loop lag p99
    40 ms; DB pool 30 % used".
    """
    if knee is None or knee not in steps:
        return "No knee: no resource verdict."
    index = steps.index(knee)
    figures = knee.get("resources", {})
    said = details(figures)
    head = f"the knee at {knee['users']} users"
    if not said:
        return f"{head}: no resource figures (no metrics, no worker CPU)."
    found = bottleneck(steps, index)
    if found is None:
        first: list[str] = []
        head += " reached no resource threshold (latency came first)"
    else:
        bound, at = found
        first = [bound, *COMPANIONS.get(bound, [])]
        head += f" is {bound}-bound"
        if at > index:
            head += f" (past its threshold at {steps[at]['users']} users)"
    primary = [said[b] for b in first if b in said]
    rest = [said[b] for b in ORDER if b in said and b not in first]
    text = f"{head}: " + "; ".join(
        part for part in (", ".join(primary), ", ".join(rest)) if part
    )
    if not figures.get("metrics"):
        text += (
            "; no metrics (/metrics did not answer): event loop, DB pool and "
            "upstreams unknown"
        )
    return text + "."
