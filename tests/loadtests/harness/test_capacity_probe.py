"""The capacity an overload run is offered a multiple of (harness.capacity_probe)."""

from loadtests.harness import capacity_probe


def step(users: int, ok_rps: float, p99: float, fail_ratio=0.0, shed_ratio=0.0):
    """A step as the step load records it (its admitted requests' stats)."""
    return {
        "users": users,
        "stats": {
            "requests": int(ok_rps * 3),
            "ok_rps": ok_rps,
            "p99_ms": p99,
            "fail_ratio": fail_ratio,
            "shed_ratio": shed_ratio,
        },
    }


def test_knee_is_the_most_answers_with_p99_within_the_slo():
    """More users past the knee add latency, not answers: the capacity is the
    busiest step whose p99 is within the SLO; later, slower steps are not it."""
    steps = [
        step(6, 90, 70),
        step(12, 180, 90),
        step(18, 231, 160),
        step(24, 240, 260),
        step(30, 229, 240),
    ]
    assert capacity_probe.knee(steps, 250)["users"] == 18
    assert capacity_probe.knee(steps, 300)["users"] == 24


def test_knee_leaves_out_failing_and_empty_steps():
    """A step with over 1 % failed or refused is past capacity; none left: None."""
    steps = [
        step(6, 90, 70),
        step(12, 180, 90, fail_ratio=0.02),
        step(18, 200, 90, shed_ratio=0.02),
        {"users": 24, "stats": None},
    ]
    assert capacity_probe.knee(steps, 250)["users"] == 6
    assert capacity_probe.knee(steps[1:], 250) is None
