"""``python -m loadtests.refusal_cost``: its rival and its arithmetic."""

import shutil

import pytest
import requests

from devtools.processes import Processes
from loadtests import refusal_cost
from loadtests.harness.servers import start_refusing


@pytest.fixture(scope="module")
def rival(tmp_path_factory):
    """gunicorn's stock gevent worker answering the canned 503: (URL, master pid)."""
    with Processes(log_dir=tmp_path_factory.mktemp("refusing-logs")) as processes:
        base = start_refusing(processes)
        yield base, processes.servers[base].pid


def test_the_rival_refuses_like_the_service(rival):
    base, _ = rival
    response = requests.get(f"{base}/demo/fan-out/?http=10&ms=50", timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "overloaded"


@pytest.mark.skipif(not shutil.which("h2load"), reason="h2load is not installed")
def test_the_cost_is_the_extra_cpu_over_the_extra_refusals(rival):
    """Between 50 and 400 req/s, every answer a refusal: some µs each, more
    than nothing and less than the 2.5 ms a request that took all the CPU of
    one core at 400 a second would."""
    base, master = rival
    cost = refusal_cost.refusal_cost(base + "/x", master, (50.0, 400.0), 2.0)
    assert 1.0 < cost < 2500.0


def test_the_rates_are_two_the_lower_first():
    assert refusal_cost.parse_args([]).rates == (100.0, 2000.0)
    with pytest.raises(SystemExit):
        refusal_cost.parse_args(["--rates", "2000,100"])
    with pytest.raises(SystemExit):
        refusal_cost.parse_args(["--rates", "100"])
