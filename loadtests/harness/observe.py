"""Watch a run's server (``scrape``) and give its windows resource figures.

The commands wrap each Locust run in ``scraping(...)``; afterwards the windows
the Locust process recorded in ``steady.json`` (the steady state, each step of
a step load) are turned into the figures of ``resources.window_figures`` plus
their utilisations and what saturated (``saturation``).
"""

import json
import os

from loadtests.harness import saturation
from loadtests.harness.locust_run import LocustRun
from loadtests.harness.resources import proxy_ms_per_request, window_figures
from loadtests.harness.scrape import Sample, Scraper
from loadtests.harness.target import Watch
from project.core import fd_budget

# /metrics is open on loopback in development; said explicitly so a run
# scrapes whatever the default becomes (``--env METRICS_ENABLED=false`` wins).
METRICS_ENV = {"METRICS_ENABLED": "true"}


def scraping(host: str, watch: Watch) -> Scraper:
    """A scraper of ``host``'s /metrics and the CPU of the processes ``watch`` names."""
    return Scraper(host, watch.server_pids, watch.proxy_pid)


def worker_cores(workers: int) -> float:
    """Cores the workers can keep busy: one each (gevent), at most the machine's."""
    return float(min(max(workers, 1), os.cpu_count() or 1))


def workers_seen(samples: list[Sample]) -> int:
    """The most workers one sample found: a target's worker count, when its
    masters were given (0 when none were)."""
    return max((len(sample.cpu) for sample in samples), default=0)


def upstream_limit(env: dict[str, str] | None, workers: int) -> float | None:
    """Sockets (and bulkhead slots) per upstream over all workers.

    HTTP_POOL_MAXSIZE x workers; unset, the server's default as settings work
    it out (our descriptor limit, which the server only raises, so the figure
    errs low and the utilisation high). None when the server's environment is
    unknown (a ``--target``): its pool's use is then not judged.
    """
    if env is None:
        return None
    size = env.get("HTTP_POOL_MAXSIZE")
    if size:
        return float(int(size) * workers)
    connections = int(env.get("WORKER_CONNECTIONS", "1000"))
    return float(fd_budget.default_http_pool_size(connections) * workers)


def judged(
    samples: list[Sample],
    start: float,
    end: float,
    *,
    cores: float,
    limit: float | None,
) -> dict:
    """A window's figures with each resource's utilisation and what saturated."""
    figures = window_figures(samples, start, end, cores=cores, upstream_limit=limit)
    figures["utilisation"] = saturation.utilisation(figures)
    figures["saturated"] = saturation.saturated(figures)
    return figures


def steady_figures(
    samples: list[Sample], result: dict, *, cores: float, limit: float | None
) -> dict | None:
    """The steady window's figures (None when the run recorded no window)."""
    if not result.get("window") or "clock" not in result:
        return None
    start, end = (result["clock"] + t for t in result["window"])
    return judged(samples, start, end, cores=cores, limit=limit)


def add_step_figures(
    samples: list[Sample],
    result: dict,
    trim: float,
    *,
    cores: float,
    limit: float | None,
) -> None:
    """Give each step of a step-load ``result`` its figures (ramp trimmed)."""
    clock = result.get("clock")
    for step in result.get("steps", []):
        if clock is None or "end" not in step:
            continue
        start, end = clock + step["start"] + trim, clock + step["end"]
        figures = judged(samples, start, end, cores=cores, limit=limit)
        figures["proxy_ms_per_request"] = proxy_ms_per_request(
            figures["proxy_cpu_cores"], offered_rps(step.get("stats"))
        )
        step["resources"] = figures


def offered_rps(stats: dict | None) -> float:
    """Requests a second a step sent: admitted and refused, since both pass a
    proxy (0 without figures)."""
    if not stats or not stats.get("rps"):
        return 0.0
    admitted = 1.0 - stats.get("shed_ratio", 0.0)
    return stats["rps"] / admitted if admitted > 0 else 0.0


def save(run: LocustRun) -> None:
    """Write the run's result, with the figures added here, back to steady.json."""
    if run.result:  # no steady.json was written: nothing to add to
        (run.report_dir / "steady.json").write_text(json.dumps(run.result, indent=1))


def summary(figures: dict | None) -> str:
    """One line of a window's resources, for the console."""
    if figures is None:
        return "resources: no window"
    parts = list(saturation.details(figures).values())
    if not figures.get("metrics"):
        parts.append("no metrics")
    if figures.get("proxy_cpu_cores") is not None:
        parts.append(f"proxy CPU {figures['proxy_cpu_cores']:.2f} cores")
    bound = ", ".join(figures.get("saturated", [])) or "nothing"
    return f"resources: {'; '.join(parts) or 'none measured'}; saturated: {bound}"
