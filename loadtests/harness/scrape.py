"""Poll the server's ``/metrics`` and its workers' CPU while a load run goes on.

A ``Scraper`` thread (in the command's own process, not Locust's) takes one
``Sample`` a second: the ``gd_*`` samples of the Prometheus text exposition
(parsed with ``prometheus_client.parser``) and the user + system CPU seconds of
each gunicorn worker and of the whole host (psutil). A missing endpoint (404,
refused, timeout) never fails the run: the sample just has no metrics, and a
window without any is reported as "no metrics" (``resources.window_figures``).

Timestamps are ``time.monotonic()``, the system-wide monotonic clock on Linux,
so they compare with the step and steady windows the Locust process records
(``steady.json``'s ``clock`` is that process's origin).
"""

import threading
import time
from dataclasses import dataclass, field
from typing import Self

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

METRICS_PATH = "/metrics"
PREFIX = "gd_"
INTERVAL_S = 1.0
# Short: on a saturated machine a slow scrape is a missed sample, not a stall.
TIMEOUT_S = 0.8

# name -> [(labels, value)], e.g. "gd_db_pool_connections" -> [({"state": ...}, 3.0)]
Metrics = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class Sample:
    """One poll at monotonic time ``t``: metrics (None when none came) and CPU.

    ``cpu``: CPU seconds by worker pid; ``host``: the host's busy and total CPU
    seconds (all cores), None when unknown.
    """

    t: float
    metrics: Metrics | None
    cpu: dict[int, float] = field(default_factory=dict)
    host: tuple[float, float] | None = None


def parse(text: str) -> Metrics:
    """The ``gd_*`` samples of a Prometheus text exposition, by sample name."""
    metrics: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(PREFIX):
                metrics.setdefault(sample.name, []).append(
                    (dict(sample.labels), float(sample.value))
                )
    return metrics


def workers_cpu(master_pid: int | None) -> dict[int, float]:
    """User + system CPU seconds so far of each child (worker) of ``master_pid``.

    By pid, so a worker recycled mid-run counts from zero instead of making
    the total go backwards.
    """
    if master_pid is None:
        return {}
    cpu = {}
    try:
        children = psutil.Process(master_pid).children()
    except psutil.Error:
        return {}
    for child in children:
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue  # exited between the listing and the read
        cpu[child.pid] = times.user + times.system
    return cpu


def host_cpu() -> tuple[float, float]:
    """The host's busy and total CPU seconds so far, over all cores."""
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def fetch_metrics(base_url: str, timeout: float = TIMEOUT_S) -> Metrics | None:
    """``base_url``'s /metrics, parsed; None when it does not answer 200 in time."""
    try:
        response = requests.get(base_url + METRICS_PATH, timeout=timeout)
        if response.status_code != 200:
            return None
        return parse(response.text)
    except Exception:
        # Refused, timed out, or not the text format (the parser raises more
        # than ValueError on some garbage): a sample without metrics, never a
        # dead scraper thread or a failed run.
        return None


class Scraper:
    """Samples ``base_url``'s /metrics and its workers' CPU every ``interval`` s.

    A context manager: the thread starts on entry, takes a last sample and
    stops on exit.
    """

    def __init__(
        self, base_url: str, master_pid: int | None, interval: float = INTERVAL_S
    ) -> None:
        self.base_url = base_url
        self.master_pid = master_pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> Sample:
        """Take one sample now and keep it."""
        t = time.monotonic()
        cpu, host = workers_cpu(self.master_pid), host_cpu()
        sample = Sample(t, fetch_metrics(self.base_url), cpu, host)
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
