"""``make storm``'s clients against a real server, and its verdicts."""

import shutil

import pytest

from loadtests import storm
from loadtests.storm import Case, Result

W2 = storm.WORKLOADS["W2"]


@pytest.mark.parametrize("client", ["wrk", "gevent"])
def test_clients_retry_at_once_and_count_2xx_apart(client, shed_server):
    """Against a server that admits every second request and refuses the rest,
    both clients (wrk when installed, the gevent fallback) send the next request
    at once: hundreds in a second, half of them 2xx, the refusals counted
    apart and no socket error."""
    if client == "wrk" and not shutil.which("wrk"):
        pytest.skip("wrk is not installed")
    shed_server.admit_every = 2
    result = storm.CLIENTS[client](shed_server.url, W2, 4, 1.0)
    answered = result.ok + result.refused
    assert answered >= 200 and result.errors == 0
    assert abs(result.ok - result.refused) <= 8
    assert 0.9 <= result.seconds <= 1.5
    assert result.ok_rps == pytest.approx(result.ok / result.seconds)
    assert result.p99_ms is not None and result.p99_ms < 1000


WRK_REPORT = """Running 10s test @ http://127.0.0.1:40000/demo/fan-out/?http=10&ms=50
  2 threads and 40 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    20.05ms   40.11ms 310.00ms   88.00%
  Latency Distribution
     50%    3.10ms
     75%    5.00ms
     90%   80.00ms
     99%    1.21s
  104830 requests in 10.02s, 20.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 104229
Requests/sec:  10462.08
Transfer/sec:      2.01MB
"""


def test_wrk_report_is_parsed():
    """2xx are wrk's answers less its non-2xx; the p99 in ms whatever the unit."""
    result = storm.parse_wrk(WRK_REPORT)
    assert (result.ok, result.refused, result.errors) == (601, 104229, 5)
    assert result.seconds == pytest.approx(10.02)
    assert result.p99_ms == pytest.approx(1210.0)
    with pytest.raises(ValueError):
        storm.parse_wrk("unable to connect to 127.0.0.1:9 Connection refused")


def run(ok_rps: float, refused: int = 0, p99: float = 100.0) -> Result:
    """A 10-second run with these figures."""
    return Result(int(ok_rps * 10), refused, 0, 10.0, p99)


def test_verdict_ratio_and_needless_refusals():
    """PASS needs the median 2xx/s ratio >= 0.9, and no refusal in a round whose
    run without admission control kept p99 within 250 ms."""
    close = Case("W1", 1, 40, [{"on": run(200), "off": run(210)}] * 3)
    assert storm.verdict(close) == (True, "")
    storming = Case("W1", 1, 40, [{"on": run(30, 9000), "off": run(220, 0, 300)}])
    ok, why = storm.verdict(storming)
    assert not ok and why == "on/off < 0.9"
    needless = Case("W1", 2, 100, [{"on": run(400, 7), "off": run(410, 0, 240)}])
    ok, why = storm.verdict(needless)
    assert not ok and "refused 7" in why
    overloaded = Case("W1", 2, 400, [{"on": run(400, 7), "off": run(410, 0, 900)}])
    assert storm.verdict(overloaded)[0]
    assert "| W1 2x400 | 400.0 | 410.0 | 0.98 | 7 |" in storm.table([overloaded])


def test_options():
    """Cases are WORKERSxCONNECTIONS; unknown workloads are refused."""
    args = storm.parse_args(["--cases", "1x40,2x400", "--workloads", "W2"])
    assert (args.cases, args.workloads) == ([(1, 40), (2, 400)], ["W2"])
    with pytest.raises(SystemExit):
        storm.parse_args(["--cases", "40"])
    with pytest.raises(SystemExit):
        storm.parse_args(["--workloads", "W9"])
