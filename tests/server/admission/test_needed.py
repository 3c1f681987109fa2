"""The concurrency a worker's routes need: rate x shortest latency, per route."""

import pytest

from project.server.admission.needed import MAX_ROUTES, NeededConcurrency


def interval(needed: NeededConcurrency, **routes: tuple[int, float]) -> float:
    """One 100 ms interval with ``count`` completions of ``seconds`` per route."""
    for route, (count, seconds) in routes.items():
        for _ in range(count):
            needed.completed(route, seconds)
    return needed.needed(0.1)


def test_one_route_needs_its_rate_times_its_shortest_latency():
    """400/s that take 50 ms at best need 20 in flight."""
    needed = NeededConcurrency()
    assert interval(needed, w1=(40, 0.05)) == pytest.approx(20.0)


def test_routes_add_up_each_with_its_own_latency():
    """A 1 ms route beside a 10 s one: each is counted with its own minimum."""
    needed = NeededConcurrency()
    assert interval(needed, fast=(100, 0.001), slow=(1, 10.0)) == pytest.approx(
        1000 * 0.001 + 10 * 10.0
    )


def test_lumpy_completions_never_read_below_their_average_rate():
    """Fan-outs completing in lumps (80, then none) never read as less than
    400/s, not as a rate that halves the limit every other interval."""
    needed = NeededConcurrency()
    readings = [
        interval(needed, w1=(0, 0.05) if i % 2 else (80, 0.05)) for i in range(10)
    ]
    assert min(readings) >= 20.0


def test_a_load_starting_after_a_pause_reads_at_its_rate():
    """Two seconds idle, then 400/s: read as 400/s at once, not diluted by
    the idle intervals still in the window."""
    needed = NeededConcurrency()
    interval(needed, w1=(40, 0.05))
    for _ in range(19):
        needed.needed(0.1)
    assert interval(needed, w1=(40, 0.05)) == pytest.approx(20.0)


def test_a_route_gone_quiet_drops_out_after_the_window():
    """A route with no completions for the whole window needs nothing."""
    needed = NeededConcurrency()
    interval(needed, old=(10, 1.0))
    for _ in range(25):
        last = interval(needed, new=(10, 0.01))
    assert last == pytest.approx(100 * 0.01)


def test_routes_past_the_cap_share_one_entry():
    """A client sending endless distinct paths cannot grow the table."""
    needed = NeededConcurrency()
    for n in range(MAX_ROUTES + 50):
        needed.completed(f"/x{n}", 0.01)
    assert len(needed._routes) == MAX_ROUTES + 1


def test_the_shortest_latency_is_held_while_the_cpu_is_saturated():
    """Saturated, every request is slowed: the latency learned before holds,
    so the need does not follow the queueing up; learning again, it moves."""
    needed = NeededConcurrency()
    interval(needed, w1=(40, 0.05))
    for _ in range(30):
        for _ in range(40):
            needed.completed("w1", 0.5)  # ten times slower: all queueing
        held = needed.needed(0.1, learning=False)
    assert held == pytest.approx(20.0)
    for _ in range(25):
        learned = interval(needed, w1=(40, 0.08))
    assert learned == pytest.approx(400 * 0.08)


def test_a_shorter_latency_under_saturation_replaces_the_held_one():
    """A minimum learned while a burst was already queueing (saturation is
    read a few intervals late) is not kept for good: the shorter latencies
    the cap brings back lower it, and longer ones never raise it."""
    needed = NeededConcurrency()
    interval(needed, w1=(40, 0.11))  # learned with the queueing of a burst
    for latency in (0.09, 0.5, 0.06, 0.3):
        for _ in range(40):
            needed.completed("w1", latency)
        held = needed.needed(0.1, learning=False)
    assert held == pytest.approx(400 * 0.06)


def test_a_route_first_seen_under_saturation_counts_from_what_it_shows():
    """No latency learned yet: the one it shows is used, not nothing."""
    needed = NeededConcurrency()
    for _ in range(10):
        needed.completed("new", 0.2)
    assert needed.needed(0.1, learning=False) == pytest.approx(100 * 0.2)
