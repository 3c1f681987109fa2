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
from loadtests.harness.processes import Processes
from loadtests.harness.resources import window_figures
from loadtests.harness.scrape import Sample, Scraper
from project.core import fd_budget

# /metrics is open on loopback in development; said explicitly so a run
# scrapes whatever the default becomes (``--env METRICS_ENABLED=false`` wins).
METRICS_ENV = {"METRICS_ENABLED": "true"}


def scraping(processes: Processes, host: str) -> Scraper:
    """A scraper of ``host`` (a server ``processes`` started) and its workers."""
    server = processes.servers.get(host)
    return Scraper(host, server.pid if server is not None else None)


def worker_cores(workers: int) -> float:
    """Cores the workers can keep busy: one each (gevent), at most the machine's."""
    return float(min(workers, os.cpu_count() or 1))


def upstream_limit(env: dict[str, str], workers: int) -> float:
    """Sockets (and bulkhead slots) per upstream over all workers.

    HTTP_POOL_MAXSIZE x workers; unset, the server's default as settings work
    it out (our descriptor limit, which the server only raises, so the figure
    errs low and the utilisation high).
    """
    size = env.get("HTTP_POOL_MAXSIZE")
    if size:
        return float(int(size) * workers)
    connections = int(env.get("WORKER_CONNECTIONS", "1000"))
    return float(fd_budget.default_http_pool_size(connections) * workers)


def judged(
    samples: list[Sample], start: float, end: float, *, cores: float, limit: float
) -> dict:
    """A window's figures with each resource's utilisation and what saturated."""
    figures = window_figures(samples, start, end, cores=cores, upstream_limit=limit)
    figures["utilisation"] = saturation.utilisation(figures)
    figures["saturated"] = saturation.saturated(figures)
    return figures


def steady_figures(
    samples: list[Sample], result: dict, *, cores: float, limit: float
) -> dict | None:
    """The steady window's figures (None when the run recorded no window)."""
    if not result.get("window") or "clock" not in result:
        return None
    start, end = (result["clock"] + t for t in result["window"])
    return judged(samples, start, end, cores=cores, limit=limit)


def add_step_figures(
    samples: list[Sample], result: dict, trim: float, *, cores: float, limit: float
) -> None:
    """Give each step of a step-load ``result`` its figures (ramp trimmed)."""
    clock = result.get("clock")
    for step in result.get("steps", []):
        if clock is None or "end" not in step:
            continue
        start, end = clock + step["start"] + trim, clock + step["end"]
        step["resources"] = judged(samples, start, end, cores=cores, limit=limit)


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
    bound = ", ".join(figures.get("saturated", [])) or "nothing"
    return f"resources: {'; '.join(parts) or 'none measured'}; saturated: {bound}"
