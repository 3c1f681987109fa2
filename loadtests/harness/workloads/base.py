"""What a bench workload is: the servers it compares, one measured run, its table.

``python -m loadtests.bench`` runs every server of a workload in every round, at
every user level, and prints the medians and the same-round ratios; a workload
says which servers (``servers``), how one run is measured (``measure``) and which
figures its tables show (``columns``, ``ratios``).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import Processes
from loadtests.harness.locust_run import LocustRun, run_locust
from loadtests.harness.paths import BASE_DIR

# Gunicorn (or uvicorn) workers of every server a bench starts.
WORKERS = 2
THIS_TREE = "this tree"
ASYNCIO = "asyncio"
# A bare gevent WSGI fan-out (loadtests/floor): what W1 costs at the least.
FLOOR = "floor"
GTHREAD = "gthread"
# Django's own pool on psycopg 3 (loadtests/pg3pool): what W2 would be without ours.
PG3POOL = "pg3pool"
# Servers that answer one workload's endpoint only (``Workload.rivals``).
RIVALS = (ASYNCIO, FLOOR, PG3POOL)
# ``--compare env:KEY=VALUE[,KEY=VALUE]``: this tree again, with those settings.
ENV_PREFIX = "env:"


def env_override(item: str) -> dict[str, str] | None:
    """The settings of an ``env:KEY=VALUE[,KEY=VALUE...]`` item; None for another
    kind of item. Raises ValueError naming a malformed pair."""
    if not item.startswith(ENV_PREFIX):
        return None
    pairs = [pair.strip() for pair in item[len(ENV_PREFIX) :].split(",")]
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not key.strip().isupper():
            raise ValueError(f"{item!r}: {pair!r} is not KEY=VALUE")
        env[key.strip()] = value.strip()
    return env


@dataclass(frozen=True)
class Server:
    """One server of a round: its label, worker model, settings and checkout.

    ``mode`` is a gunicorn worker model (``servers.SERVER_MODES``),
    ``asyncio`` for the asyncio baseline, ``floor`` for the bare fan-out or
    ``pg3pool`` for Django's own pool; ``env`` and ``args`` come last.
    """

    label: str
    mode: str = "gevent"
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    tree: Path = BASE_DIR


@dataclass(frozen=True)
class Target:
    """A started server under measurement, and what a run may need around it."""

    processes: Processes
    base: str
    upstream: str
    database_url: str

    @property
    def master_pid(self) -> int:
        """The gunicorn master (uvicorn supervisor): its children are the workers."""
        return self.processes.servers[self.base].pid


@dataclass(frozen=True)
class Column:
    """A figure of the median table: header, result key, format."""

    header: str
    key: str
    fmt: str = "{:.0f}"


@dataclass(frozen=True)
class Ratio:
    """A same-round ratio, ours over theirs (theirs over ours when ``inverse``)."""

    header: str
    key: str
    inverse: bool = False


HEADLINE = [
    Column("req/s", "rps"),
    Column("p50 ms", "p50"),
    Column("p99 ms", "p99"),
    Column("failures", "failures"),
    Column("shed", "shed"),
]


class Workload(ABC):
    """One workload of ``loadtests.bench``; subclasses set the class attributes."""

    name: str
    title: str
    locustfile: str
    # Its servers call the stub upstream, started once for all rounds.
    needs_upstream = True
    # The rivals (of RIVALS) that answer this workload's endpoint.
    rivals: tuple[str, ...] = ()
    columns: list[Column] = []
    ratios = [Ratio("req/s ratio", "rps"), Ratio("p99 ratio", "p99")]

    def server_env(self, upstream: str) -> dict[str, str]:
        """The environment every gunicorn of this workload gets."""
        return {"DEMO_UPSTREAM_URL": upstream}

    def server_database_url(self, url: str) -> str:
        """The DATABASE_URL every gunicorn of this workload gets."""
        return url

    def locust_env(self) -> dict[str, str]:
        """Settings the locustfile reads from its environment."""
        return {}

    def servers(
        self, compare: list[str], trees: dict[str, Path], database_url: str
    ) -> list[Server]:
        """This tree first, then each ``--compare``: asyncio, floor, gthread, this tree
        with ``env:`` overrides, or a revision."""
        servers = [Server(THIS_TREE)]
        for item in compare:
            override = env_override(item)
            if override is not None:
                servers.append(Server(item, env=override))
            elif item in (ASYNCIO, FLOOR, GTHREAD):
                servers.append(Server(item, mode=item))
            else:
                servers.append(Server(item, tree=trees[item]))
        return servers

    def comparisons(self, servers: list[Server]) -> list[tuple[str, str, str]]:
        """(label, ours, theirs) of the ratio table: the first server against each."""
        first = servers[0].label
        return [(f"{first} / {s.label}", first, s.label) for s in servers[1:]]

    def run(
        self, target: Target, users: int, seconds: int, report_dir: Path
    ) -> LocustRun:
        """One headless Locust run of the workload's locustfile against ``target``."""
        return run_locust(
            target.processes,
            [self.locustfile],
            host=target.base,
            users=users,
            seconds=seconds,
            report_dir=report_dir,
            env=self.locust_env(),
        )

    @abstractmethod
    def measure(
        self, target: Target, users: int, seconds: int, report_dir: Path
    ) -> dict:
        """One run's figures: ``HEADLINE``'s keys and the workload's columns."""

    def details(self, result: dict) -> str:
        """The workload's own figures in a run's progress line."""
        return ""
