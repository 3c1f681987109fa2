"""Guards: what a load run must achieve, declared in ``guards.toml``, and their check.

Per scenario and endpoint: ``p50_ms``, ``p95_ms``, ``p99_ms``, ``max_ms``
(maxima), ``max_fail_ratio``, ``min_rps`` and ``max_shed_ratio`` (the share of
the endpoint's requests refused under overload, reported as ``NAME shed``) and
``min_capacity_ratio`` (the endpoint's successful answers a second over the
capacity measured just before the run, ``capacity_rps``: see
``harness/capacity_probe.py``);
ratio guards against a baseline measured in the same run
(``[[scenarios.X.ratios]]``: an endpoint's metric over another endpoint's) or
in the same ``make loadtest`` (top-level ``[[ratios]]``: one scenario's metric
over another's). An open-model run (``arrival_rate``) also
fails when its main endpoint (admitted and refused together) achieves less
than ``min_arrival_ratio`` (97 %) of the target.

Everything is evaluated on steady-state stats (``harness.window``); this module
is pure Python so it is unit-tested on synthetic stats.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from loadtests.harness.checks import SHED_SUFFIX
from loadtests.harness.paths import GUARDS_FILE
from loadtests.harness.window import AGGREGATED, EndpointStats

# The exit code of a run (Locust's or a command's) whose guards failed: Locust
# itself uses 1 for request errors and 2 for crashes.
GUARD_FAILED = 3

# Guard key -> (EndpointStats attribute, "max" or "min").
LIMITS = {
    "p50_ms": ("p50_ms", "max"),
    "p95_ms": ("p95_ms", "max"),
    "p99_ms": ("p99_ms", "max"),
    "max_ms": ("max_ms", "max"),
    "max_fail_ratio": ("fail_ratio", "max"),
    "min_rps": ("rps", "min"),
}
# Every per-endpoint guard: the limits above, the refused share and goodput
# against the measured capacity.
GUARDS = {*LIMITS, "max_shed_ratio", "min_capacity_ratio"}
# ok_rps: successful answers a second, what a same-round throughput ratio
# compares (a refusal answered in 1 ms must not count as throughput).
METRICS = {"p50_ms", "p95_ms", "p99_ms", "fail_ratio", "rps", "ok_rps"}
DEFAULT_SETTINGS = {
    "warmup_s": 3.0,
    "abort_factor": 3.0,
    "abort_after_s": 3.0,
    "abort_min_requests": 20,
    "min_arrival_ratio": 0.97,
}


@dataclass
class Check:
    """One guard's outcome."""

    scenario: str
    endpoint: str
    guard: str
    value: float | None
    limit: float
    kind: str  # "max" or "min"
    ok: bool
    detail: str = ""

    def beyond(self, factor: float) -> bool:
        """True when the value misses its limit by more than ``factor`` times."""
        if self.value is None:
            return False
        if self.kind == "max":
            return self.value > self.limit * factor
        return self.value < self.limit / factor


def load(path: Path = GUARDS_FILE) -> dict:
    """Read a guards file; ``settings`` gets defaults for missing keys."""
    with open(path, "rb") as handle:
        config = tomllib.load(handle)
    config["settings"] = {**DEFAULT_SETTINGS, **config.get("settings", {})}
    config.setdefault("scenarios", {})
    config.setdefault("ratios", [])
    return config


def _compare(value: float | None, limit: float, kind: str) -> bool:
    if value is None:
        return False
    return value <= limit if kind == "max" else value >= limit


def _metric(stats: EndpointStats | None, metric: str) -> float | None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {sorted(METRICS)}")
    return None if stats is None else getattr(stats, metric)


def _ratio_check(
    scenario: str, endpoint: str, guard: str, ratio: dict, value, baseline
) -> Check:
    kind = "max" if "max" in ratio else "min"
    limit = float(ratio[kind])
    quotient = value / baseline if value is not None and baseline else None
    detail = (
        "no baseline figure" if quotient is None else f"{value:.4g} / {baseline:.4g}"
    )
    return Check(
        scenario,
        endpoint,
        guard,
        quotient,
        limit,
        kind,
        _compare(quotient, limit, kind),
        detail,
    )


def main_endpoint(spec: dict) -> str:
    """The scenario's first guarded endpoint, else ``Aggregated``.

    It is the one the open model's rate is checked on, so helper requests (a
    baseline timer) do not count towards the target.
    """
    return next(iter(spec.get("endpoints", {})), AGGREGATED)


def evaluate(
    scenario: str,
    spec: dict,
    stats: dict[str, EndpointStats],
    *,
    settings: dict | None = None,
) -> list[Check]:
    """Check one run's steady-state ``stats`` against its scenario ``spec``.

    An endpoint with a guard but no requests in the window fails ("no requests").
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    checks = _limit_checks(scenario, spec, stats)
    for ratio in spec.get("ratios", []):
        metric = ratio["metric"]
        checks.append(
            _ratio_check(
                scenario,
                ratio["endpoint"],
                f"{metric} / {ratio['baseline']}",
                ratio,
                _metric(stats.get(ratio["endpoint"]), metric),
                _metric(stats.get(ratio["baseline"]), metric),
            )
        )
    if spec.get("arrival_rate"):
        checks.append(_arrival_check(scenario, spec, stats, settings))
    return checks


def _limit_checks(
    scenario: str, spec: dict, stats: dict[str, EndpointStats]
) -> list[Check]:
    checks = []
    for endpoint, limits in spec.get("endpoints", {}).items():
        entry = stats.get(endpoint)
        for guard, limit in limits.items():
            detail = ""
            if guard == "max_shed_ratio":
                value, kind = shed_ratio(stats, endpoint), "max"
            elif guard == "min_capacity_ratio":
                value, kind, detail = _capacity_ratio(spec, entry)
            elif guard in LIMITS:
                attribute, kind = LIMITS[guard]
                value = (
                    None
                    if entry is None or not entry.requests
                    else getattr(entry, attribute)
                )
            else:
                raise ValueError(f"{scenario} {endpoint}: unknown guard {guard!r}")
            if value is None and not detail:
                detail = "no requests"
            checks.append(
                Check(
                    scenario,
                    endpoint,
                    guard,
                    value,
                    float(limit),
                    kind,
                    _compare(value, float(limit), kind),
                    detail,
                )
            )
    return checks


def _capacity_ratio(
    spec: dict, entry: EndpointStats | None
) -> tuple[float | None, str, str]:
    """(ok_rps / capacity_rps, "min", detail) for a ``min_capacity_ratio`` guard."""
    capacity = spec.get("capacity_rps")
    if not capacity:
        return None, "min", "no capacity measured"
    if entry is None or not entry.requests:
        return None, "min", f"no requests (capacity {capacity:.4g} req/s)"
    return (
        entry.ok_rps / capacity,
        "min",
        f"{entry.ok_rps:.4g} / {capacity:.4g} req/s capacity",
    )


def shed_ratio(stats: dict[str, EndpointStats], endpoint: str) -> float | None:
    """Refused / (admitted + refused) requests of ``endpoint``; None without any."""
    admitted = stats[endpoint].requests if endpoint in stats else 0
    shed = stats.get(endpoint + SHED_SUFFIX)
    refused = shed.requests if shed else 0
    total = admitted + refused
    return refused / total if total else None


def offered_rps(stats: dict[str, EndpointStats], endpoint: str) -> float | None:
    """Requests a second ``endpoint`` was sent: admitted and refused together."""
    names = (endpoint, endpoint + SHED_SUFFIX)
    parts = [stats[name] for name in names if name in stats]
    return sum(part.rps for part in parts) if parts else None


def _arrival_check(
    scenario: str, spec: dict, stats: dict[str, EndpointStats], settings: dict
) -> Check:
    # The open model's achieved rate on its main endpoint, against the target.
    rate = spec["arrival_rate"]
    endpoint = main_endpoint(spec)
    achieved = offered_rps(stats, endpoint)
    ratio = achieved / rate if achieved is not None else None
    minimum = float(settings["min_arrival_ratio"])
    return Check(
        scenario,
        endpoint,
        "achieved / target rate",
        ratio,
        minimum,
        "min",
        _compare(ratio, minimum, "min"),
        f"target {rate:g} req/s",
    )


def evaluate_cross(
    ratios: list[dict], stats_by_scenario: dict[str, dict[str, EndpointStats]]
) -> list[Check]:
    """Ratio guards between scenarios of one command (e.g. gevent vs gthread req/s).

    A ratio whose scenarios did not both run is skipped.
    """
    checks = []
    for ratio in ratios:
        scenario, base = ratio["scenario"], ratio["baseline_scenario"]
        if scenario not in stats_by_scenario or base not in stats_by_scenario:
            continue
        endpoint = ratio.get("endpoint", AGGREGATED)
        metric = ratio["metric"]
        checks.append(
            _ratio_check(
                scenario,
                endpoint,
                f"{metric} / {base}",
                ratio,
                _metric(stats_by_scenario[scenario].get(endpoint), metric),
                _metric(stats_by_scenario[base].get(endpoint), metric),
            )
        )
    return checks


def hopeless(checks: list[Check], factor: float) -> list[Check]:
    """Failed checks ``factor`` times beyond their limit: waiting is pointless."""
    return [check for check in checks if not check.ok and check.beyond(factor)]


def exit_code(checks: list[Check]) -> int:
    """0 when every check passed, else ``GUARD_FAILED``."""
    return 0 if all(check.ok for check in checks) else GUARD_FAILED


def fmt(value: float | None) -> str:
    """A figure with 4 significant digits, '-' for none."""
    return "-" if value is None else f"{value:.4g}"


def format_table(checks: list[Check]) -> str:
    """A Markdown table of the checks, failures marked."""
    lines = [
        "| result | scenario | endpoint | guard | value | limit | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        sign = "<=" if c.kind == "max" else ">="
        lines.append(
            f"| {'pass' if c.ok else 'FAIL'} | {c.scenario} | {c.endpoint} | {c.guard} "
            f"| {fmt(c.value)} | {sign} {c.limit:g} | {c.detail} |"
        )
    return "\n".join(lines)
