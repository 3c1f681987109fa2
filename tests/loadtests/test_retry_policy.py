"""The harness user's retry policy against a real server that refuses everything.

Locust runs as its own process (importing locust would patch pytest's); the
server (``shed_server``, conftest) answers every request as admission control
does when full: 503, ``X-Shed-Reason`` and ``Retry-After: 1``.
"""

import json

from devtools.processes import Processes
from loadtests.harness.locust_run import run_locust

SECONDS = 3


def refused_requests(server, tmp_path, policy: str) -> tuple[int, dict]:
    """Requests the server saw from one closed-model W2 user in SECONDS under
    ``policy``, and the run's steady-state results."""
    server.count = 0
    report = tmp_path / policy
    with Processes() as processes:
        run = run_locust(
            processes,
            ["slow_sql.py"],
            host=server.url,
            users=1,
            seconds=SECONDS,
            report_dir=report,
            options=["--retry-policy", policy, "--warmup", "0"],
        )
    assert run.returncode == 0, (report / "locust.log").read_text()
    return server.count, json.loads((report / "steady.json").read_text())


def test_at_once_retries_without_waiting_and_retry_after_backs_off(
    shed_server, tmp_path
):
    """One user refused for SECONDS: the polite one (the default) sends about one
    request per Retry-After second; the impolite one sends the next request as
    soon as the refusal arrives, hundreds of them. Both report them as NAME shed,
    not as failures."""
    polite, polite_run = refused_requests(shed_server, tmp_path, "retry-after")
    impolite, impolite_run = refused_requests(shed_server, tmp_path, "at-once")
    assert 1 <= polite <= SECONDS + 2
    assert impolite >= 100 * SECONDS
    for run in (polite_run, impolite_run):
        assert run["stats"]["/demo/slow-sql/ shed"]["fail_ratio"] == 0
        assert "/demo/slow-sql/" not in run["stats"]
    assert (polite_run["retry_policy"], impolite_run["retry_policy"]) == (
        "retry-after",
        "at-once",
    )
