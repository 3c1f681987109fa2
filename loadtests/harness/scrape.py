"""Poll the server's ``/metrics`` and its workers' CPU while a load run goes on.

A ``Scraper`` thread (in the command's own process, not Locust's) takes one
``Sample`` a second: the ``gd_*`` samples of the Prometheus text exposition
(parsed with ``prometheus_client.parser``) and the user + system CPU seconds of
each gunicorn worker (the children of the given masters), of a reverse proxy
(its master and children) and of the whole host (psutil). Without pids no
process CPU is sampled ("CPU not sampled"): a server someone else started
(``--target``) may have none given. A missing endpoint (404,
refused, timeout) never fails the run: the sample just has no metrics, and a
window without any is reported as "no metrics" (``resources.window_figures``).

Timestamps are ``time.monotonic()``, the system-wide monotonic clock on Linux,
so they compare with the step and steady windows the Locust process records
(``steady.json``'s ``clock`` is that process's origin).
"""

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from project.core.schedstat import process_cpu_s

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
    seconds (all cores), None when unknown; ``proxy``: CPU seconds by pid of
    the reverse proxy's processes (empty when not watched).
    """

    t: float
    metrics: Metrics | None
    cpu: dict[int, float] = field(default_factory=dict)
    host: tuple[float, float] | None = None
    proxy: dict[int, float] = field(default_factory=dict)


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


def processes_cpu(processes: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds so far of each of ``processes``, by pid.

    By pid, so a process replaced mid-run (a recycled worker) counts from zero
    instead of making the total go backwards.
    """
    cpu = {}
    for process in processes:
        # To the nanosecond: psutil reads /proc/<pid>/stat's 10 ms ticks, and
        # an nginx serving 200 requests in a short step read 0 of them.
        seconds = process_cpu_s(process.pid)
        if seconds is None:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue  # exited between the listing and the read
            seconds = times.user + times.system
        cpu[process.pid] = seconds
    return cpu


def workers_cpu(master_pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds so far of each child (worker) of the gunicorn ``master_pids``."""
    children = []
    for pid in master_pids:
        try:
            children += psutil.Process(pid).children()
        except psutil.Error:
            continue  # a master that is gone has no workers to sample
    return processes_cpu(children)


def proxy_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds so far of a proxy's master ``pid`` and all its descendants."""
    if pid is None:
        return {}
    try:
        master = psutil.Process(pid)
        return processes_cpu([master, *master.children(recursive=True)])
    except psutil.Error:
        return {}


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
    """Samples ``base_url``'s /metrics and processes' CPU every ``interval`` s.

    ``master_pids``: gunicorn masters whose workers' CPU is sampled;
    ``proxy_pid``: a reverse proxy's master, sampled with its children. A
    context manager: the thread starts on entry, takes a last sample and stops
    on exit.
    """

    def __init__(
        self,
        base_url: str,
        master_pids: Sequence[int] = (),
        proxy_pid: int | None = None,
        interval: float = INTERVAL_S,
    ) -> None:
        self.base_url = base_url
        self.master_pids = tuple(master_pids)
        self.proxy_pid = proxy_pid
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
        cpu, host = workers_cpu(self.master_pids), host_cpu()
        proxy = proxy_cpu(self.proxy_pid)
        sample = Sample(t, fetch_metrics(self.base_url), cpu, host, proxy)
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
