"""The USL fit and capacity arithmetic (loadtests.usl) on synthetic data."""

import math

import numpy as np
import pytest

from loadtests.harness import usl

USERS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128]


@pytest.mark.parametrize(
    ("sigma", "kappa"), [(0.05, 0.001), (0.2, 0.0002), (0.02, 0.005)]
)
def test_fit_recovers_sigma_and_kappa(sigma, kappa):
    """Exact synthetic throughput gives back lam, sigma and kappa within 5 %."""
    fitted = usl.fit(USERS, list(usl.throughput(USERS, 100.0, sigma, kappa)))
    assert fitted.sigma == pytest.approx(sigma, rel=0.05)
    assert fitted.kappa == pytest.approx(kappa, rel=0.05)
    assert fitted.lam == pytest.approx(100.0, rel=0.05)


def test_fit_recovers_sigma_and_kappa_from_noisy_data():
    """With 0.5 % measurement noise sigma and kappa stay within 5 % (20 seeds)."""
    clean = usl.throughput(USERS, 100.0, 0.05, 0.001)
    for seed in range(20):
        noise = np.random.default_rng(seed).normal(0, 0.005, len(USERS))
        fitted = usl.fit(USERS, list(clean * (1 + noise)))
        assert fitted.sigma == pytest.approx(0.05, rel=0.05), seed
        assert fitted.kappa == pytest.approx(0.001, rel=0.05), seed


def test_peak_of_the_curve():
    """N* = sqrt((1 - sigma) / kappa) and X there is the maximum."""
    fit = usl.Fit(100.0, 0.05, 0.001)
    assert fit.peak_users == pytest.approx(math.sqrt(0.95 / 0.001))
    grid = np.arange(1, 200)
    assert fit.peak_rps == pytest.approx(float(np.max(fit(grid))), rel=0.001)


def test_no_coherency_means_no_peak():
    """With kappa = 0 throughput only approaches lam / sigma."""
    fit = usl.Fit(100.0, 0.1, 0.0)
    assert math.isinf(fit.peak_users)
    assert fit.peak_rps == pytest.approx(1000.0)


def test_fit_needs_three_points():
    """Two load levels are not enough to fit three parameters."""
    with pytest.raises(ValueError):
        usl.fit([1, 2], [10, 20])


def step(users, rps, p95, fail=0.0):
    """A measured step."""
    return {"users": users, "rps": rps, "p95_ms": p95, "fail_ratio": fail}


def test_knee_is_the_busiest_step_within_the_slo():
    """Steps past the p95 SLO or with failures are excluded; flat gains do not count."""
    steps = [
        step(10, 100, 60),
        step(20, 190, 70),
        step(30, 190, 90),
        step(40, 260, 150, fail=0.02),
        step(50, 270, 250),
    ]
    assert usl.knee(steps, 200, 0.01)["users"] == 20
    assert usl.knee([step(10, 100, 300)], 200, 0.01) is None


def test_a_step_the_server_refused_more_of_is_past_the_knee():
    """Refusals (shed_ratio) count as failed towards the SLO's failure limit."""
    steps = [step(10, 100, 60), {**step(20, 190, 70), "shed_ratio": 0.015}]
    assert usl.knee(steps, 200, 0.01)["users"] == 10


def test_plan_rounds_up_workers_and_hosts():
    """2,000 req/s at 700 req/s per 2-worker host: 6 workers on 3 hosts of 2 cores."""
    result = usl.plan(
        target_rps=2000, per_host_rps=700, workers_per_host=2, cores_per_host=2
    )
    assert (result.workers, result.hosts) == (6, 3)
