"""W2, slow SQL: ``/demo/slow-sql/?x=7&ms=50`` on gevent + pool, against gthread
and against Django's own pool on psycopg 3.

Compared with gthread, four servers run per round: gevent with the pool on its
defaults (sized from the database's budget), gthread on its defaults (32
threads, Django's own backend, ``CONN_MAX_AGE=60``), then each with the other's
database budget (gevent with a pool of 32, gthread with as many threads as our
default pool). ``pg3pool`` (``loadtests/pg3pool``: Django 5.2's
``OPTIONS["pool"]`` under gunicorn's gevent worker) runs on the budget of our
pool of 32, against it. Another revision runs with a pool of 32, against this
tree's. Each run records the peak of the server's PostgreSQL backends and its
workers' CPU per request.
"""

import threading
import time
from pathlib import Path

import psycopg2

from devtools.gunicorn import with_query
from loadtests.harness.locust_run import admitted_headline, read_stats_csv
from loadtests.harness.paths import BASE_DIR
from loadtests.harness.workloads.base import (
    GTHREAD,
    PG3POOL,
    WORKERS,
    Column,
    Ratio,
    Server,
    Target,
    Workload,
    env_override,
)
from loadtests.harness.workloads.fanout import workers_cpu_seconds

APPLICATION_NAME = "bench-db"
ENDPOINT = "/demo/slow-sql/"  # slow_sql.py's name
# Django's default and ours: what the gthread baseline runs with.
GTHREAD_THREADS = 32
GEVENT = "gevent"
SMALL_POOL = f"gevent pool {GTHREAD_THREADS}"
SMALL_POOL_ENV = {"DB_POOL_SIZE": str(GTHREAD_THREADS)}


def default_pool_size(url: str) -> int:
    """Connections per worker our pool takes by default on this database."""
    from project.core.pg_pool.probes import budget_size

    conn = psycopg2.connect(url, connect_timeout=5, application_name="bench-sizer")
    try:
        return budget_size(conn, share=WORKERS, reserve=10)
    finally:
        conn.close()


class PeakBackends(threading.Thread):
    """Samples this benchmark's backends in pg_stat_activity every 0.2 s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.peak = 0
        self.running = True

    def run(self) -> None:
        """Sample until stopped."""
        conn = psycopg2.connect(self.url, connect_timeout=5, application_name="sampler")
        conn.autocommit = True
        with conn.cursor() as cursor:
            while self.running:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [APPLICATION_NAME],
                )
                self.peak = max(self.peak, cursor.fetchone()[0])
                time.sleep(0.2)
        conn.close()


class SlowSql(Workload):
    """W2 on this tree, against gthread on either budget, Django's own pool and
    other revisions."""

    name = "W2"
    title = "W2 /demo/slow-sql/?ms=50"
    locustfile = "slow_sql.py"
    needs_upstream = False
    rivals = (PG3POOL,)
    columns = [
        Column("worker CPU ms/req", "cpu_ms", "{:.2f}"),
        Column("peak backends", "peak_backends"),
    ]
    ratios = [
        Ratio("req/s ratio", "rps"),
        Ratio("p99 ratio", "p99"),
        Ratio("CPU/req ratio", "cpu_ms"),
    ]

    def server_database_url(self, url: str) -> str:
        """A name on every connection, so the sampler counts only these."""
        return with_query(url, {"application_name": APPLICATION_NAME})

    def servers(
        self, compare: list[str], trees: dict[str, Path], database_url: str
    ) -> list[Server]:
        """gevent; with gthread the three others; with pg3pool or a revision our
        pool of 32 (if gthread did not bring it), then pg3pool; a revision's pool
        of 32; each ``env:`` override last."""
        servers = [Server(GEVENT)]
        overrides = [item for item in compare if env_override(item) is not None]
        revisions = [
            item for item in compare if item not in (GTHREAD, PG3POOL, *overrides)
        ]
        if GTHREAD in compare:
            threads = str(default_pool_size(database_url))
            servers += [
                Server(GTHREAD, mode=GTHREAD),
                Server(SMALL_POOL, env=SMALL_POOL_ENV),
                Server(
                    f"gthread {threads} threads", GTHREAD, args=("--threads", threads)
                ),
            ]
        elif revisions or PG3POOL in compare:
            servers.append(Server(SMALL_POOL, env=SMALL_POOL_ENV))
        if PG3POOL in compare:
            servers.append(Server(PG3POOL, mode=PG3POOL, env=SMALL_POOL_ENV))
        servers += [
            Server(f"{rev} pool {GTHREAD_THREADS}", env=SMALL_POOL_ENV, tree=trees[rev])
            for rev in revisions
        ]
        servers += [Server(item, env=env_override(item) or {}) for item in overrides]
        return servers

    def comparisons(self, servers: list[Server]) -> list[tuple[str, str, str]]:
        """Defaults with defaults, each model on the other's budget, our pool of
        32 and each ``env:`` override against pg3pool, the revisions' pools."""
        labels = [s.label for s in servers]
        pairs = []
        if GTHREAD in labels:
            threads = labels[3]
            pairs += [
                ("defaults", GEVENT, GTHREAD),
                (f"budget of {GTHREAD}", SMALL_POOL, GTHREAD),
                (f"budget of {GEVENT}", GEVENT, threads),
            ]
        if PG3POOL in labels:
            pairs += [
                (f"{s.label} / {PG3POOL}", s.label, PG3POOL)
                for s in servers
                if s.label == SMALL_POOL or env_override(s.label) is not None
            ]
        return pairs + [
            (f"this tree / {s.label}", SMALL_POOL, s.label)
            for s in servers
            if s.tree != BASE_DIR
        ]

    def measure(
        self, target: Target, users: int, seconds: int, report_dir: Path
    ) -> dict:
        """Locust's figures, the workers' CPU per request and the peak of the
        server's database backends."""
        sampler = PeakBackends(target.database_url)
        sampler.start()
        cpu_before = workers_cpu_seconds(target.master_pid)
        try:
            run = self.run(target, users, seconds, report_dir)
        finally:
            sampler.running = False
            sampler.join()
        cpu = workers_cpu_seconds(target.master_pid) - cpu_before
        figures = admitted_headline(read_stats_csv(run.report_dir), ENDPOINT)
        return {
            **figures,
            "cpu_ms": 1000 * cpu / max(figures["requests"] + figures["shed"], 1),
            "peak_backends": sampler.peak,
        }

    def details(self, result: dict) -> str:
        """The workers' CPU per request and the peak of the server's backends."""
        return (
            f"CPU {result['cpu_ms']:.2f} ms/req  "
            f"peak backends {result['peak_backends']}"
        )
