"""The metric families through a real gunicorn with two workers, merged.

Each worker writes its samples to the multiprocess directory;
``MultiProcessCollector`` merges them as ``/metrics`` will.
"""

import glob
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from gevent.pool import Pool

from tests.helpers import BASE_DIR
from tests.metrics_samples import merged, total

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-live-token-0123456789"
HTTP_LEGS, SQL_LEGS = 3, 2


def writers(directory: Path) -> set[str]:
    """The pids that wrote counters (file names end in _<pid>.db)."""
    files = glob.glob(os.path.join(directory, "counter_*.db"))
    return {Path(name).stem.rsplit("_", 1)[1] for name in files}


def test_two_workers_fill_every_family(
    start_gunicorn, test_database_url, upstream, tmp_path
):
    """Fan-outs and aggregations on two workers: the merged families add up."""
    directory = tmp_path / "metrics"
    server = start_gunicorn(
        test_database_url,
        workers=2,
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        DEMO_UPSTREAM_URL=upstream,
        AGGREGATIONS_FILE=str(BASE_DIR / "examples" / "aggregations.toml"),
        AGGREGATION_API_TOKENS=TOKEN,
        CATALOG_URL=upstream,
        REVIEWS_URL=upstream,
    )
    fan_out = f"/demo/fan-out/?http={HTTP_LEGS}&sql={SQL_LEGS}&ms=20"
    product = "/api/aggregate/product/?id=7&ms=5&reviews_status=500"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fan_outs = aggregations = 0
    # Concurrent bursts until both workers have served (the kernel picks).
    for _ in range(10):
        pool = Pool(30)
        answers = pool.map(lambda _: server.get(fan_out), range(30))
        answers += pool.map(lambda _: server.get(product, headers=auth), range(10))
        assert {answer.status_code for answer in answers} == {200}
        fan_outs, aggregations = fan_outs + 30, aggregations + 10
        if len(writers(directory)) == 2:
            break
    assert len(writers(directory)) == 2
    # One at a time: the cached source is now a hit (in whichever worker).
    for _ in range(4):
        assert server.get(product, headers=auth).status_code == 200
    aggregations += 4
    time.sleep(1.5)  # the socket gauges are set once a second

    samples = merged(directory)
    origin = f"{urlsplit(upstream).hostname}:{urlsplit(upstream).port}"
    # Every demo leg counted once, by origin, in whichever worker ran it.
    assert total(samples, "gd_upstream_calls_total", upstream=origin) == (
        fan_outs * HTTP_LEGS
    )
    assert (
        total(samples, "gd_upstream_call_duration_seconds_count", upstream=origin)
        == fan_outs * HTTP_LEGS
    )
    assert total(samples, "gd_upstream_connections", upstream=origin, state="open") > 0
    assert total(samples, "gd_db_query_duration_seconds_count") >= fan_outs * SQL_LEGS
    assert total(samples, "gd_db_pool_size") > 0
    assert total(samples, "gd_db_pool_connections", state="idle") > 0
    assert total(samples, "gd_db_pool_events_total", event="created") >= 2
    assert total(samples, "gd_db_pool_checkout_wait_seconds_count") > 0
    # The product: details cached after each worker's first miss, reviews a 500.
    assert total(samples, "gd_upstream_calls_total", upstream="reviews") > 0
    breaker = ("gd_upstream_breaker_state", frozenset({("upstream", "reviews")}))
    assert breaker in samples
    assert (
        total(
            samples,
            "gd_aggregation_source_results_total",
            aggregation="product",
            source="reviews",
        )
        == aggregations
    )
    assert total(samples, "gd_aggregation_partial_total", aggregation="product") > 0
    assert total(samples, "gd_aggregation_cache_total", result="hit") > 0
    assert total(samples, "gd_aggregation_cache_total", result="miss") >= 2
