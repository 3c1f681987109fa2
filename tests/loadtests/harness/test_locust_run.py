"""Reading what Locust wrote (loadtests.harness.locust_run), no load run."""

from loadtests.harness.locust_run import admitted_headline, headline


def row(requests: str, rps: str, p50: str, p99: str, failures: str) -> dict:
    """A row of Locust's stats CSV (only the columns read)."""
    return {
        "Request Count": requests,
        "Requests/s": rps,
        "50%": p50,
        "99%": p99,
        "Failure Count": failures,
    }


def test_headline_converts_a_locust_stats_row() -> None:
    """Locust's CSV strings become numbers."""
    assert headline(row("1755", "175.5", "55", "80", "2")) == {
        "requests": 1755,
        "rps": 175.5,
        "p50": 55.0,
        "p99": 80.0,
        "failures": 2,
    }


def test_refusals_are_neither_throughput_nor_failures() -> None:
    """The endpoint's admitted figures, its NAME shed row counted apart; the
    Aggregated row (which sums both) is not read."""
    rows = {
        "/x": row("1000", "100", "50", "90", "1"),
        "/x shed": row("4000", "400", "2", "5", "0"),
        "Aggregated": row("5000", "500", "3", "80", "1"),
    }
    figures = admitted_headline(rows, "/x")
    assert (figures["rps"], figures["p99"], figures["shed"]) == (100.0, 90.0, 4000)
    refused_only = admitted_headline({"/x shed": rows["/x shed"]}, "/x")
    assert (refused_only["rps"], refused_only["shed"]) == (0.0, 4000)
