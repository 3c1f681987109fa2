"""The Universal Scalability Law (Gunther) and the capacity arithmetic built on it.

Throughput at concurrency N:
``X(N) = lam * N / (1 + sigma * (N - 1) + kappa * N * (N - 1))``.
``lam`` is the throughput of one user alone, ``sigma`` the contention (the part
that serialises: a pool, a lock, one CPU), ``kappa`` the coherency cost (work
that grows with every pair of users, e.g. cross-talk, cache misses). With
``kappa > 0`` throughput peaks at ``N* = sqrt((1 - sigma) / kappa)`` and falls after.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit


def throughput(n, lam: float, sigma: float, kappa: float):
    """X(N) of the USL; ``n`` may be a number or a numpy array."""
    n = np.asarray(n, dtype=float)
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


@dataclass
class Fit:
    """Fitted USL parameters."""

    lam: float
    sigma: float
    kappa: float

    def __call__(self, n):
        """Predicted throughput at concurrency ``n``."""
        return throughput(n, self.lam, self.sigma, self.kappa)

    @property
    def peak_users(self) -> float:
        """Concurrency of the highest throughput (infinite when kappa is 0)."""
        if self.kappa <= 0:
            return math.inf
        return math.sqrt(max(0.0, 1 - self.sigma) / self.kappa)

    @property
    def peak_rps(self) -> float:
        """The highest throughput (the limit 1 / sigma x lam when kappa is 0)."""
        if math.isinf(self.peak_users):
            return self.lam / self.sigma if self.sigma > 0 else math.inf
        return float(self(self.peak_users))


def fit(users: list[float], rps: list[float]) -> Fit:
    """Least-squares USL fit of measured (users, req/s); needs three points or more.

    ``lam`` starts from the best per-user throughput seen, sigma and kappa from
    small values; all three are bounded to be non-negative (sigma at most 1).
    """
    if len(users) < 3:
        raise ValueError("the USL fit needs at least 3 load levels")
    n = np.asarray(users, dtype=float)
    x = np.asarray(rps, dtype=float)
    lam0 = float(np.max(x / n))
    (lam, sigma, kappa), _cov = curve_fit(
        throughput,
        n,
        x,
        p0=[lam0, 0.01, 0.0001],
        bounds=([0.0, 0.0, 0.0], [np.inf, 1.0, 1.0]),
        maxfev=20000,
    )
    return Fit(float(lam), float(sigma), float(kappa))


def knee(steps: list[dict], slo_p95_ms: float, max_fail_ratio: float) -> dict | None:
    """The busiest step that met the SLO: p95 within it and failures under the limit.

    ``steps`` are dicts with users, rps, p95_ms, fail_ratio and (optionally)
    shed_ratio, the share the server refused, which counts as failed: a server
    that refuses work is past its capacity. The knee is where adding users stops
    paying: the highest throughput among the steps within the SLO (a later step
    with more users but no more throughput is not preferred).
    """
    within = [
        s
        for s in steps
        if s["p95_ms"] is not None
        and s["p95_ms"] <= slo_p95_ms
        and s["fail_ratio"] + s.get("shed_ratio", 0.0) <= max_fail_ratio
    ]
    if not within:
        return None
    return max(within, key=lambda s: (s["rps"], -s["users"]))


@dataclass
class Plan:
    """How many workers, cores and hosts a target load needs."""

    target_rps: float
    per_host_rps: float
    workers_per_host: int
    cores_per_host: int
    workers: int
    hosts: int


def plan(
    *,
    target_rps: float,
    per_host_rps: float,
    workers_per_host: int,
    cores_per_host: int,
) -> Plan:
    """Workers (one per core) and hosts for ``target_rps`` from one host's req/s."""
    per_worker = per_host_rps / workers_per_host
    workers = max(1, math.ceil(target_rps / per_worker))
    hosts = max(1, math.ceil(workers / cores_per_host))
    return Plan(
        target_rps, per_host_rps, workers_per_host, cores_per_host, workers, hosts
    )
