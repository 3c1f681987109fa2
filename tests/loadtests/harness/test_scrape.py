"""Scraping /metrics and a window's resource figures, from synthetic expositions."""

import http.server
import math
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import psutil
import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from devtools.processes import Processes
from loadtests.harness import resources, scrape
from loadtests.harness.scrape import Sample
from project.core.metrics import WAIT_BUCKETS


class Server:
    """The service's metric families on their own registry: a synthetic /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lag = Histogram(
            "gd_event_loop_lag_seconds", "", buckets=WAIT_BUCKETS, registry=r
        )
        self.wait = Histogram(
            "gd_db_pool_checkout_wait_seconds", "", buckets=WAIT_BUCKETS, registry=r
        )
        self.size = Gauge("gd_db_pool_size", "", registry=r)
        self.connections = Gauge("gd_db_pool_connections", "", ["state"], registry=r)
        self.waiting = Gauge("gd_db_pool_waiting", "", registry=r)
        self.upstream = Gauge(
            "gd_upstream_connections", "", ["upstream", "state"], registry=r
        )
        self.bulkhead = Gauge(
            "gd_upstream_bulkhead_in_use", "", ["upstream"], registry=r
        )
        self.transitions = Counter(
            "gd_upstream_breaker_transitions", "", ["upstream", "state"], registry=r
        )

    def text(self) -> str:
        """The exposition now, as /metrics would answer it."""
        return generate_latest(self.registry).decode()


def test_histogram_quantile_interpolates_like_prometheus():
    """Linear inside the bucket; from 0 in the first; +Inf gives the top bound."""
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (math.inf, 100.0)]
    assert resources.histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert resources.histogram_quantile(0.25, buckets) == pytest.approx(0.005)
    assert resources.histogram_quantile(0.7, buckets) == pytest.approx(0.03)
    assert resources.histogram_quantile(0.95, buckets) == pytest.approx(0.075)
    over = [(0.01, 1.0), (0.05, 2.0), (math.inf, 10.0)]
    assert resources.histogram_quantile(0.99, over) == 0.05
    assert resources.histogram_quantile(0.99, [(0.01, 0.0), (math.inf, 0.0)]) is None


def test_window_figures_from_first_and_last_scrape():
    """Histograms are differenced over the window; gauges are the window's max."""
    server = Server()
    for _ in range(1000):  # before the window: must not count
        server.lag.observe(0.4)
    server.size.set(64)
    server.transitions.labels("stub", "open").inc()
    samples = [Sample(0.0, scrape.parse(server.text()), {1: 10.0, 2: 10.0}, (5, 10))]
    for second, in_use in enumerate((20, 60, 30), start=1):
        for _ in range(98):
            server.lag.observe(0.002)
        server.lag.observe(0.2)
        server.lag.observe(0.2)
        server.wait.observe(0.03)
        server.connections.labels("in_use").set(in_use)
        server.waiting.set(in_use // 10)
        server.upstream.labels("stub", "open").set(in_use * 2)
        server.upstream.labels("other", "open").set(5)
        server.bulkhead.labels("stub").set(in_use)
        if second == 2:
            server.transitions.labels("stub", "open").inc(2)
        # Worker 2 recycled in the window: its successor 3 counts from zero.
        cpu = {1: 10.0 + 0.5 * second, 3: 0.4 * second}
        host = (5 + 1.5 * second, 10 + 2 * second)  # 75 % of the host's 2 cores
        samples.append(Sample(float(second), scrape.parse(server.text()), cpu, host))

    figures = resources.window_figures(
        samples, 0.0, 3.0, cores=2.0, upstream_limit=200.0
    )

    assert figures["metrics"] is True
    # 300 observations in the window, 6 of 200 ms: rank 297 is 3/6 into (0.1, 0.25].
    assert figures["loop_lag_p99_ms"] == pytest.approx(175)
    assert figures["db_wait_p95_ms"] == pytest.approx(48.75)  # 2.85/3 into (25, 50] ms
    assert figures["db_in_use_max"] == 60
    assert figures["db_size"] == 64
    assert figures["db_waiting_max"] == 6
    assert figures["upstream_open_max"] == 125
    assert figures["upstream_busiest_max"] == 120
    assert figures["bulkhead_busiest_max"] == 60
    assert figures["breaker_opens"] == 2
    assert figures["cpu_cores"] == pytest.approx((1.5 + 1.2) / 3)
    assert figures["cpu_util"] == pytest.approx(0.45)
    assert figures["host_cpu_util"] == pytest.approx(0.75)


def test_window_without_metrics_keeps_the_cpu():
    """A window whose scrapes all failed says so and still has the workers' CPU."""
    samples = [Sample(t, None, {7: 1.8 * t}) for t in (0.0, 1.0, 2.0)]
    figures = resources.window_figures(samples, 0.0, 2.0, cores=2.0)
    assert figures["metrics"] is False
    assert figures["cpu_util"] == pytest.approx(0.9)
    assert "db_in_use_max" not in figures


@contextmanager
def serving(body: str | None):
    """A loopback HTTP server answering /metrics with ``body`` (None: 404)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            ok = body is not None and self.path == "/metrics"
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(body.encode())

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_scraper_polls_and_parses():
    """Samples at the interval, with the gd_ samples parsed."""
    server = Server()
    server.size.set(8)
    with serving(server.text()) as url, scrape.Scraper(url, interval=0.05) as s:
        threading.Event().wait(0.3)
    assert len(s.samples) >= 3
    assert all(sample.metrics is not None for sample in s.samples)
    assert s.samples[-1].metrics["gd_db_pool_size"] == [({}, 8.0)]


@pytest.mark.parametrize(
    "body", [None, "<html>not metrics</html>\n", 'gd_broken{le="1" 3\n']
)
def test_scraper_without_metrics_records_none(body):
    """A 404, or a page that is not the text format, is a sample without metrics."""
    with serving(body) as url, scrape.Scraper(url, interval=0.05) as s:
        threading.Event().wait(0.15)
    assert s.samples and all(sample.metrics is None for sample in s.samples)
    assert scrape.fetch_metrics("http://127.0.0.1:9", timeout=0.2) is None


def test_proxy_cpu_and_cost_per_request():
    """The proxy's processes are differenced by pid like the workers; its CPU
    per request is its CPU rate over the request rate."""
    # nginx master 1 and worker 2; worker 2 replaced by 3 (a reload) at t = 2.
    proxies = [{1: 1.0, 2: 5.0}, {1: 1.0, 2: 5.1}, {1: 1.02, 3: 0.08}]
    samples = [Sample(float(t), None, {}, None, p) for t, p in enumerate(proxies)]
    figures = resources.window_figures(samples, 0.0, 2.0, cores=2.0)
    assert figures["proxy_cpu_cores"] == pytest.approx((0.02 + 0.08) / 2)
    # Workers not sampled (no pids): unknown, not zero.
    assert figures["cpu_cores"] is None and figures["cpu_util"] is None
    # 0.05 cores at 500 req/s: 0.1 ms of proxy CPU per request.
    assert resources.proxy_ms_per_request(0.05, 500.0) == pytest.approx(0.1)
    assert resources.proxy_ms_per_request(None, 500.0) is None
    assert resources.proxy_ms_per_request(0.05, 0.0) is None


# A master with two children that each burn 0.3 s of CPU (not of wall time:
# the machine is shared), then idle; on
# SIGTERM it stops them first, so the test leaves no process behind.
MASTER = """
import signal, subprocess, sys, time
burn = "import time\\nwhile time.process_time() < 0.3: pass\\ntime.sleep(30)"
children = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
def stop(*_):
    for child in children:
        child.terminate()
        child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(30)
"""


def test_cpu_of_given_pids():
    """Workers are the children of each master given; a proxy is its master
    and every descendant; a pid that is gone samples nothing."""
    with Processes() as processes:
        master = processes.popen([sys.executable, "-c", MASTER], "master")
        for _ in range(100):
            workers = scrape.workers_cpu([master.pid, 2**22 + 1])  # beyond pid_max
            if len(workers) == 2 and min(workers.values()) > 0.25:
                break
            time.sleep(0.1)
        proxy = scrape.proxy_cpu(master.pid)
    assert len(workers) == 2 and min(workers.values()) > 0.25
    assert set(proxy) == {master.pid, *workers}
    assert scrape.proxy_cpu(None) == {} and scrape.workers_cpu([]) == {}


SPIN = """
import sys, time
sys.stdin.readline()
start = time.process_time()
while time.process_time() - start < 0.003:
    pass
print("done", flush=True)
time.sleep(30)
"""


def test_cpu_is_read_finer_than_the_kernel_s_10_ms_ticks():
    """3 ms of CPU reads as about 3 ms, not 0 or 10 (the ticks of
    /proc/<pid>/stat, which a short step of a light proxy falls between)."""
    with Processes() as processes:
        child = processes.popen(
            [sys.executable, "-c", SPIN],
            "spin",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # its start-up CPU is done
        process = psutil.Process(child.pid)
        before = scrape.processes_cpu([process])[child.pid]
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        spent = scrape.processes_cpu([process])[child.pid] - before
    assert 0.0025 <= spent < 0.009, spent
