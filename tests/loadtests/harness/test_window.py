"""Steady-state windows over cumulative stats snapshots (loadtests.harness.window)."""

from loadtests.harness.window import (
    Counts,
    Snapshot,
    percentile,
    stats_from_json,
    stats_to_json,
    window_stats,
    without,
)


def cumulative(per_second: list[dict[int, int]], failures: list[int]) -> list[Snapshot]:
    """Snapshots at t = 0, 1, 2, ... of histograms added second by second."""
    snapshots = [Snapshot(0.0, 10, {"e": Counts()})]
    histogram: dict[int, int] = {}
    requests = failed = 0
    for second, (added, fails) in enumerate(zip(per_second, failures, strict=True), 1):
        for value, count in added.items():
            histogram[value] = histogram.get(value, 0) + count
            requests += count
        failed += fails
        snapshots.append(
            Snapshot(
                float(second), 10, {"e": Counts(requests, failed, dict(histogram))}
            )
        )
    return snapshots


def test_percentile_is_nearest_rank():
    """p50 of 1..100 is 50, p95 is 95, p99 is 99; an empty histogram has none."""
    histogram = {value: 1 for value in range(1, 101)}
    assert percentile(histogram, 0.50) == 50
    assert percentile(histogram, 0.95) == 95
    assert percentile(histogram, 0.99) == 99
    assert percentile({}, 0.5) is None


def test_window_excludes_the_ramp():
    """Slow, failing ramp seconds outside the window do not count."""
    ramp = [{900: 10}] * 3
    steady = [{50: 100}] * 5
    snapshots = cumulative(ramp + steady, [5, 5, 5, 0, 0, 0, 0, 0])
    stats = window_stats(snapshots, start=3.0, end=8.0)["e"]
    assert (stats.requests, stats.failures, stats.seconds) == (500, 0, 5.0)
    assert stats.rps == 100.0
    assert stats.p99_ms == 50


def test_whole_run_includes_the_ramp():
    """The same snapshots over the whole run show the ramp's latency and failures."""
    snapshots = cumulative([{900: 10}] * 3 + [{50: 100}] * 5, [5, 5, 5, 0, 0, 0, 0, 0])
    stats = window_stats(snapshots, start=0.0, end=8.0)["e"]
    assert stats.requests == 530
    assert stats.failures == 15
    assert stats.p99_ms == 900


def test_window_needs_two_snapshots():
    """A window holding fewer than two snapshots has no stats."""
    snapshots = cumulative([{50: 1}] * 3, [0, 0, 0])
    assert window_stats(snapshots, start=2.5, end=3.5) == {}


def test_endpoint_first_seen_inside_the_window():
    """An endpoint missing from the first snapshot counts from zero."""
    first = Snapshot(0.0, 1, {})
    last = Snapshot(2.0, 1, {"new": Counts(4, 1, {10: 4})})
    stats = window_stats([first, last], 0.0, 2.0)["new"]
    assert (stats.requests, stats.failures, stats.rps, stats.fail_ratio) == (
        4,
        1,
        2.0,
        0.25,
    )


def test_json_round_trip():
    """Stats survive their JSON form."""
    snapshots = cumulative([{50: 3, 70: 1}] * 2, [1, 0])
    stats = window_stats(snapshots, 0.0, 2.0)
    assert stats_from_json(stats_to_json(stats)) == stats


def test_slowest_answer_of_the_window():
    """max_ms is the slowest answer between the two snapshots, not of the run."""
    first = Snapshot(0.0, 1, {"e": Counts(2, 0, {10: 1, 900: 1})})
    last = Snapshot(2.0, 1, {"e": Counts(5, 0, {10: 3, 900: 1, 40: 1})})
    assert window_stats([first, last], 0.0, 2.0)["e"].max_ms == 40.0
    counted_only = Snapshot(2.0, 1, {"e": Counts(7, 0, {})})
    assert window_stats([first, counted_only], 0.0, 2.0)["e"].max_ms is None


def test_admitted_is_the_total_less_the_refusals():
    """Locust's total sums every entry, so the refusals subtract out exactly."""
    total = Counts(10, 1, {3: 6, 50: 3, 90: 1})
    refused = Counts(6, 0, {3: 5, 50: 1})
    assert without(total, [refused]) == Counts(4, 1, {3: 1, 50: 2, 90: 1})
