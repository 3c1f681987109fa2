"""The fairness benchmark's verdict (loadtests/fairness.py)."""

from loadtests import fairness, storm


def outcome(victim: list[tuple[float, int]], healthz: list[float]) -> fairness.Outcome:
    """An outcome with these victim answers and probe latencies."""
    return fairness.Outcome(victim, healthz, storm.Result(0, 0, 0, 1.0, None))


def test_passes_when_the_victim_and_the_probe_meet_their_goals():
    """99 % 2xx within 250 ms and /healthz within 50 ms at p99: PASS."""
    result = outcome([(0.03, 200)] * 100, [0.002] * 100)
    assert result.ok_share == 1.0
    assert result.passed()
    assert "PASS" in fairness.line("fan-out", "on", result)


def test_fails_on_refused_victims_slow_victims_or_a_slow_probe():
    """Each goal alone fails the run."""
    assert not outcome([(0.03, 200)] * 98 + [(0.01, 503)] * 2, [0.002]).passed()
    assert not outcome([(0.03, 200)] * 95 + [(0.3, 200)] * 5, [0.002]).passed()
    assert not outcome([(0.03, 200)] * 100, [0.002] * 95 + [0.06] * 5).passed()


def test_no_answer_at_all_fails():
    """A victim that got nothing is not a pass (no division by zero either)."""
    assert not outcome([], []).passed()
    assert "FAIL" in fairness.line("token", "on", outcome([], []))


def test_the_probe_is_judged_only_where_the_storm_sets_its_goal():
    """Under the token storm /healthz's p99 is printed, not judged."""
    slow_probe = [0.002] * 95 + [0.06] * 5
    judged = outcome([(0.03, 200)] * 100, slow_probe)
    unjudged = fairness.Outcome(
        judged.victim, slow_probe, judged.hog, healthz_judged=False
    )
    assert not judged.passed()
    assert unjudged.passed()
