"""Utilisations, thresholds and the knee's verdict, on synthetic steps."""

from loadtests.harness import saturation


def step(users: int, **figures) -> dict:
    """A measured step with resource figures (metrics scraped unless told)."""
    base = {
        "metrics": True,
        "cpu_util": 0.2,
        "loop_lag_p99_ms": 2.0,
        "db_in_use_max": 4.0,
        "db_size": 64.0,
        "db_wait_p95_ms": 0.1,
        "db_waiting_max": 0.0,
        "upstream_open_max": 10.0,
        "upstream_busiest_max": 10.0,
        "bulkhead_busiest_max": 5.0,
        "upstream_limit": 200.0,
        "breaker_opens": 0.0,
    }
    return {"users": users, "rps": users * 10.0, "resources": {**base, **figures}}


def test_cpu_saturates_first():
    """CPU crosses 90 % at the knee while the pool stays low: CPU-bound."""
    steps = [
        step(20, cpu_util=0.5),
        step(40, cpu_util=0.8, loop_lag_p99_ms=12),
        step(60, cpu_util=0.98, loop_lag_p99_ms=40, db_in_use_max=19.2),
        step(70, cpu_util=0.99, loop_lag_p99_ms=90, db_in_use_max=64),
    ]
    text = saturation.verdict(steps, steps[2])
    assert text.startswith(
        "the knee at 60 users is CPU-bound: workers at 98 % CPU, loop lag p99 40 ms;"
        " DB pool 30 % used"
    )
    # Lag is furthest past its limit (1.8x) but with the CPU saturated it is
    # the CPU's symptom: the CPU comes first.
    assert saturation.saturated(steps[3]["resources"]) == [
        "CPU",
        "event-loop",
        "DB-pool",
    ]


def test_busy_host_counts_with_a_late_loop():
    """A host at 95 % is CPU-bound when the loop is late too, not on its own."""
    busy = step(40, cpu_util=0.7, host_cpu_util=0.95)
    assert saturation.saturated(busy["resources"]) == []
    late = step(40, cpu_util=0.7, host_cpu_util=0.95, loop_lag_p99_ms=60)
    assert saturation.saturated(late["resources"]) == ["CPU", "event-loop"]
    steps = [step(20, cpu_util=0.5, host_cpu_util=0.6), late]
    assert saturation.verdict(steps, steps[1]).startswith(
        "the knee at 40 users is CPU-bound: workers at 70 % CPU, host 95 % busy, "
        "loop lag p99 60 ms; DB pool"
    )


def test_loop_lag_alone_is_event_loop_bound():
    """A late loop with idle cores: something holds the loop."""
    steps = [step(10, loop_lag_p99_ms=80)]
    assert saturation.verdict(steps, steps[0]).startswith(
        "the knee at 10 users is event-loop-bound: loop lag p99 80 ms, workers at 20 %"
    )


def test_pool_saturates_first():
    """The pool is full (and checkouts wait) before the CPU is: DB-pool-bound."""
    steps = [
        step(10, cpu_util=0.2, db_in_use_max=10, db_size=16),
        step(20, cpu_util=0.3, db_in_use_max=16, db_size=16, db_wait_p95_ms=45,
             db_waiting_max=4),
        step(30, cpu_util=0.95, db_in_use_max=16, db_size=16, db_wait_p95_ms=90),
    ]  # fmt: skip
    text = saturation.verdict(steps, steps[1])
    assert text.startswith(
        "the knee at 20 users is DB-pool-bound: DB pool 100 % used, checkout wait "
        "p95 45 ms, up to 4 waiting; workers at 30 % CPU"
    )


def test_checkout_wait_alone_makes_the_pool_the_bottleneck():
    """Checkout wait p95 past 10 ms counts even with the pool under 95 % in use."""
    steps = [step(10, db_in_use_max=10, db_size=16, db_wait_p95_ms=12)]
    assert saturation.saturated(steps[0]["resources"]) == ["DB-pool"]
    assert "is DB-pool-bound" in saturation.verdict(steps, steps[0])


def test_saturation_after_the_knee_is_named_with_its_step():
    """Nothing past a threshold at the knee; the step that broke the SLO tells."""
    steps = [step(10), step(20, breaker_opens=3)]
    text = saturation.verdict(steps, steps[0])
    assert text.startswith("the knee at 10 users is breaker-bound (past its threshold")
    assert "at 20 users" in text


def test_nothing_saturated():
    """No threshold reached: said so, with the knee's figures."""
    steps = [step(10), step(20)]
    text = saturation.verdict(steps, steps[1])
    assert text.startswith("the knee at 20 users reached no resource threshold")
    assert "workers at 20 % CPU" in text


def test_no_metrics_says_so():
    """Without /metrics only the CPU is known, and the sentence says "no metrics"."""
    steps = [
        {"users": 10, "resources": {"metrics": False, "cpu_util": 0.5}},
        {"users": 20, "resources": {"metrics": False, "cpu_util": 0.93}},
    ]
    text = saturation.verdict(steps, steps[1])
    assert text.startswith("the knee at 20 users is CPU-bound: workers at 93 % CPU")
    assert "no metrics" in text
    bare = [{"users": 10, "resources": {"metrics": False, "cpu_util": None}}]
    assert "no resource figures" in saturation.verdict(bare, bare[0])
    assert saturation.verdict(steps, None) == "No knee: no resource verdict."


def test_utilisation_of_each_resource():
    """Each figure against its capacity or limit; unknown capacity gives None."""
    use = saturation.utilisation(step(10)["resources"])
    assert use == {
        "cpu": 0.2,
        "host_cpu": None,
        "loop_lag": 0.04,
        "db_pool": 4 / 64,
        "db_wait": 0.01,
        "upstream_pool": 0.05,
        "bulkhead": 0.025,
        "breaker": 0.0,
    }
    unknown = saturation.utilisation({**step(10)["resources"], "upstream_limit": None})
    assert unknown["upstream_pool"] is None and unknown["bulkhead"] is None
