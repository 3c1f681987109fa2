"""Tests for what the bench runners share (loadtests/common/bench.py)."""

import pytest

from loadtests.harness.bench import bench_parser, headline


def test_parser_reads_user_levels_and_defaults() -> None:
    """``--users 5,50`` is [5, 50]; defaults: 3 rounds of 20 s at 10/100/400 users."""
    parser = bench_parser("Doc line.\n\nmore")
    args = parser.parse_args(["--users", "5,50", "--rounds", "1"])
    assert (args.users, args.rounds, args.seconds) == ([5, 50], 1, 20)
    assert parser.parse_args([]).users == [10, 100, 400]
    with pytest.raises(SystemExit):
        parser.parse_args(["--users", "ten"])


def test_headline_converts_a_locust_stats_row() -> None:
    """Locust's CSV strings become numbers."""
    row = {"Requests/s": "175.5", "50%": "55", "99%": "80", "Failure Count": "2"}
    assert headline(row) == {"rps": 175.5, "p50": 55.0, "p99": 80.0, "failures": 2}
