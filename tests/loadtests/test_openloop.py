"""``make overload``'s open model against a real server, and its verdicts."""

import shutil

import pytest

from loadtests import openloop
from loadtests.openloop import Run, Workload

needs_h2load = pytest.mark.skipif(
    not shutil.which("h2load"), reason="h2load is not installed (nghttp2-client)"
)


@needs_h2load
def test_the_open_model_keeps_its_rate_whatever_the_answers(shed_server):
    """At 200 req/s for 2 s (after 1 s not kept), a server refusing every
    other request gets about 400 requests in the window, half refused; the
    rate does not follow the answers as a closed loop's would."""
    shed_server.admit_every = 2
    run = openloop.run_open(shed_server.url + "/x", 200.0, 2.0, 1.0)
    assert 340 <= len(run.rows) <= 440
    assert run.achieved_rps == pytest.approx(200, rel=0.15)
    assert run.failed == 0
    assert abs(len(run.rows) - 2 * run.refused) <= 20
    assert run.goodput == pytest.approx(100, rel=0.2)
    assert all(0.0 <= start < 2.0 for start, _, _ in run.rows)


@needs_h2load
def test_the_closed_loop_estimate_counts_2xx_only(shed_server):
    """The first capacity estimate: what a closed loop got answered with 2xx."""
    shed_server.admit_every = 1
    every = openloop.run_closed(shed_server.url + "/x", 4, 1.0)
    shed_server.admit_every = 0
    none = openloop.run_closed(shed_server.url + "/x", 4, 1.0)
    assert every > 100 and none == 0


def test_the_log_is_cut_to_the_measured_window():
    """Rows are kept by start time, warm-up dropped; µs become s and ms."""
    begin = 1_700_000_000_000_000
    text = "\n".join(
        f"{begin + offset_us}\t{status}\t{latency_us}"
        for offset_us, status, latency_us in [
            (0, 200, 50_000),  # warm-up
            (1_000_000, 200, 60_000),
            (1_500_000, 503, 2_000),
            (2_999_999, -1, 5_000_000),
            (3_000_000, 200, 1_000),  # after the window
        ]
    )
    rows = openloop.parse_log(text, warmup=1.0, seconds=2.0)
    assert rows == [
        (0.0, 200, 60.0),
        (pytest.approx(0.5), 503, 2.0),
        (pytest.approx(2.0, abs=1e-5), -1, 5000.0),
    ]
    assert openloop.parse_log("", 1.0, 2.0) == []


def test_connections_grow_with_the_rate_within_bounds():
    """Each connection sends at least 2 a second (none idles into the
    server's keep-alive timeout), at most 400 of them."""
    assert openloop.connections_for(10) == openloop.MIN_CONNECTIONS
    assert openloop.connections_for(450) == 225
    assert openloop.connections_for(1650) == openloop.MAX_CONNECTIONS
    assert openloop.connections_for(2445, most=1800) == 1222


def test_connections_start_staggered_over_one_request_interval():
    """1,650 req/s on 400 connections: 4.125 a second each, started 16 every
    10 ms (all within about the 242 ms between one connection's requests),
    enough requests for the whole run."""
    command = openloop.h2load_command("http://x/", 1650.0, 20.0, "log")
    assert "--clients=400" in command
    assert "--rps=4.1250" in command
    assert "--rate=16" in command and "--rate-period=10ms" in command
    assert "--requests=33200" in command  # ceil(4.125 x 20) x 400


def run(goodput: float, refused: int = 0, refusal_ms: float = 2.0) -> Run:
    """A 10-second run: ``goodput`` 2xx a second at 80 ms, ``refused`` 503s."""
    rows = [(0.0, 200, 80.0)] * int(goodput * 10) + [(0.0, 503, refusal_ms)] * refused
    return Run(0.0, 10.0, rows)


def workload(over: Run, busy: Run) -> Workload:
    """Capacity 100 req/s, three rounds of the same runs."""
    w = Workload("W1", capacity=100.0)
    w.rounds = [{("3x", "on"): over, ("0.8x", "on"): busy}] * 3
    return w


def test_verdict_passes_goodput_held_and_quick_refusals():
    assert openloop.verdict(workload(run(90, 2000), run(80))) == (True, "")


@pytest.mark.parametrize(
    ("over", "busy", "why"),
    [
        (run(80, 2000), run(80), "3x goodput < 0.85x capacity"),
        (run(90, 2000, refusal_ms=30.0), run(80), "refusals' p99 > 10 ms"),
        (run(90, 2000), run(80, refused=1), "3 refused at 0.8x"),
    ],
)
def test_verdict_fails(over, busy, why):
    ok, reasons = openloop.verdict(workload(over, busy))
    assert not ok and why in reasons
