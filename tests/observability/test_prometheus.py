"""A real Prometheus scrapes a real gunicorn (2 workers) every second; what it
computes from known traffic matches that traffic."""

import shutil
import subprocess
import time
from pathlib import Path

import gevent
import pytest
import requests

from devtools.ports import free_port, wait_for_http
from devtools.processes import stop as stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="no prometheus binary (apt-get install prometheus)",
)

CLIENTS = 10
PER_CLIENT = 20
PAUSE_S = 0.45  # each client: a 50 ms request, then this: ~2 requests/s
ROUTE = 'route="demo-delay"'


def config(target: str) -> str:
    return (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: gevent-django\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )


@pytest.fixture(scope="module")
def prometheus(start_gunicorn, test_database_url, tmp_path_factory):
    """(gunicorn, Prometheus base URL), Prometheus already scraping it."""
    server = start_gunicorn(test_database_url, workers=2)
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "prometheus.yml").write_text(config(server.url.split("//")[1]))
    port = free_port()
    with (folder / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/-/ready", process=process)
        wait_until(lambda: query(url, "up") == 1.0, "the target is up")
        yield server, url
    finally:
        stop_process(process)


def query(url: str, expr: str, at: float | None = None) -> float | None:
    """The single value of an instant query, or None when it has no result."""
    params = {"query": expr, **({"time": str(at)} if at else {})}
    body = requests.get(url + "/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_until(condition, what: str, seconds: float = 15.0) -> None:
    limit = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < limit, f"timed out waiting until {what}"
        time.sleep(0.25)


def traffic(base: str) -> int:
    """CLIENTS clients, PER_CLIENT paced requests each (~10 s); 200s answered."""

    def client() -> int:
        ok = 0
        for _ in range(PER_CLIENT):
            ok += requests.get(base + "/demo/delay/?ms=50", timeout=10).ok
            gevent.sleep(PAUSE_S)
        return ok

    clients = [gevent.spawn(client) for _ in range(CLIENTS)]
    gevent.joinall(clients, raise_error=True)
    return sum(c.value for c in clients)


def test_rates_counts_and_quantiles_match_the_traffic(prometheus):
    server, url = prometheus
    started = time.time()
    answered = traffic(server.url)
    ended = time.time()
    assert answered == CLIENTS * PER_CLIENT
    expected_rate = answered / (ended - started)
    count = f"sum(gd_http_requests_total{{{ROUTE}}})"
    # Two scrapes after the last request: the final count is exact.
    wait_until(lambda: query(url, count) == answered, f"{count} == {answered}")
    middle = (started + ended) / 2
    rate = query(url, f"sum(rate(gd_http_requests_total{{{ROUTE}}}[4s]))", middle)
    assert rate is not None and 0.5 * expected_rate < rate < 1.5 * expected_rate
    span = f"{int(time.time() - started) + 2}s"
    increase = query(url, f"sum(increase(gd_http_requests_total{{{ROUTE}}}[{span}]))")
    assert increase is not None and 0.5 * answered < increase < 1.5 * answered
    median = query(
        url,
        "histogram_quantile(0.5, sum by (le) (rate("
        f"gd_http_request_duration_seconds_bucket{{{ROUTE}}}[{span}])))",
    )
    assert median is not None and 0.05 <= median <= 0.1  # 50 ms: the 50-75 ms bucket
    lag = query(
        url,
        "histogram_quantile(0.99, sum by (le) (rate("
        f"gd_event_loop_lag_seconds_bucket[{span}])))",
    )
    assert lag is not None and lag < 1.0
