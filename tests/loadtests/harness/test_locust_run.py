"""Reading what Locust wrote (loadtests.harness.locust_run), no load run."""

from loadtests.harness.locust_run import headline


def test_headline_converts_a_locust_stats_row() -> None:
    """Locust's CSV strings become numbers."""
    row = {"Requests/s": "175.5", "50%": "55", "99%": "80", "Failure Count": "2"}
    assert headline(row) == {"rps": 175.5, "p50": 55.0, "p99": 80.0, "failures": 2}
