"""What the ``make bench-*`` runners share: options and a run's headline figures."""

import argparse
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loadtests.harness.paths import BASE_DIR


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """Options of every bench runner: rounds, seconds per run, user levels.

    ``--users`` is parsed into a list of ints (``10,100,400`` → ``[10, 100, 400]``).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--users",
        type=lambda text: [int(count) for count in text.split(",")],
        default=[10, 100, 400],
        help="comma-separated user levels (default 10,100,400)",
    )
    return parser


def add_baseline_option(parser: argparse.ArgumentParser) -> None:
    """``--baseline REV`` (repeatable): another commit run in the same rounds."""
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REV",
        help="also run this git revision in the same rounds (repeatable)",
    )


def headline(row: dict[str, str]) -> dict[str, float]:
    """req/s, p50, p99 (ms) and failures from a row of Locust's stats CSV."""
    return {
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "failures": int(row["Failure Count"]),
    }


@contextmanager
def checkout(rev: str, workdir: Path) -> Iterator[Path]:
    """A temporary detached git worktree of ``rev``; removed afterwards."""
    tree = workdir / f"tree-{rev}"

    def git(*args: str) -> None:
        subprocess.run(
            ["git", *args], cwd=BASE_DIR, check=True, capture_output=True, timeout=60
        )

    git("worktree", "add", "--detach", str(tree), rev)
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))
