"""Admission control against the clients users have, in a real gunicorn worker
(issue 23): clients that retry at once, and one client that tries to take
the worker from the others. Each compares with what the same load gets, so
the margins are wide; ``make storm`` measures the same at full size.
"""

import time

import gevent
import pytest

from devtools.processes import stop as stop_process
from loadtests import storm
from loadtests.fairness import every, percentile, timed_get

pytestmark = pytest.mark.django_db(transaction=True)

W1 = storm.Workload("/demo/fan-out/?http=10&ms=50")
SECONDS = 5.0


def test_clients_that_retry_at_once_get_as_much_as_without_admission(
    start_gunicorn, test_database_url, upstream
):
    """One worker, 40 keep-alive connections looping W1 and retrying at once:
    the defaults answer at least 0.75x the 2xx/s of the same worker with
    admission off (before the refusal budget and the Little's-law cap: 0.13x
    under wrk, the limit pinned at its minimum by the refusals' own CPU)."""
    results = {}
    for label, env in (("on", {}), ("off", {"SHED_ENABLED": "false"})):
        server = start_gunicorn(test_database_url, DEMO_UPSTREAM_URL=upstream, **env)
        storm.run_gevent(server.url, W1, 40, 2.0)  # warm up
        results[label] = storm.run_gevent(server.url, W1, 40, SECONDS)
        stop_process(server.process)
    on, off = results["on"], results["off"]
    print(
        f"2xx/s on {on.ok_rps:.0f} ({on.refused} refused), off {off.ok_rps:.0f}: "
        f"{on.ok_rps / off.ok_rps:.2f}x"
    )
    assert off.ok_rps > 50
    assert on.ok_rps >= 0.75 * off.ok_rps


TOKEN = "victim-token-0123456789"


def test_one_client_retrying_its_costliest_request_cannot_take_the_worker(
    start_gunicorn, test_database_url, upstream
):
    """One client (127.0.0.2) loops 10-leg, 2-second fan-outs on 100
    connections and retries at once; another (127.0.0.3) asks for an
    aggregation 20 times a second and keeps >= 99 % 2xx with p99 under 0.5 s,
    and /healthz stays under 0.25 s. Before: the refusals' CPU pinned the
    limit at its minimum, the hog's admitted requests held every slot, and
    the aggregations were refused."""
    server = start_gunicorn(
        test_database_url,
        DEMO_UPSTREAM_URL=upstream,
        AGGREGATIONS_FILE="loadtests/aggregations_bench.toml",
        AGGREGATION_API_TOKENS=TOKEN,
    )
    hog = storm.Workload("/demo/fan-out/?http=10&ms=2000")
    flood = gevent.spawn(
        storm.run_gevent, server.url, hog, 100, SECONDS + 1.5, "127.0.0.2"
    )
    gevent.sleep(1.0)  # the hog's requests hold what they can
    until = time.monotonic() + SECONDS
    ids = iter(range(1, 10**6))
    health = gevent.spawn(
        every,
        until,
        lambda: timed_get(server.url, "/healthz", "127.0.0.4", {}),
    )
    answers = every(
        until,
        lambda: timed_get(
            server.url,
            f"/api/aggregate/bench/?id={next(ids)}&ms=20",
            "127.0.0.3",
            {"Authorization": f"Bearer {TOKEN}"},
        ),
    )
    hogged = flood.get(timeout=30)
    health_answers = health.get(timeout=30)
    ok = [seconds for seconds, status in answers if status == 200]
    print(
        f"victim {len(ok)}/{len(answers)} 2xx, "
        f"p99 {percentile(ok, 0.99) * 1000:.0f} ms; healthz p99 "
        f"{percentile([s for s, _ in health_answers], 0.99) * 1000:.0f} ms; "
        f"hog {hogged.ok} 2xx, {hogged.refused} refused"
    )
    assert len(answers) >= 70
    assert len(ok) >= 0.99 * len(answers)
    assert percentile(ok, 0.99) <= 0.5
    assert {status for _, status in health_answers} == {200}
    assert percentile([seconds for seconds, _ in health_answers], 0.99) <= 0.25
