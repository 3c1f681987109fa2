"""What the ``make bench-*`` runners share: options and a run's headline figures."""

import argparse


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


def headline(row: dict[str, str]) -> dict[str, float]:
    """req/s, p50, p99 (ms) and failures from a row of Locust's stats CSV."""
    return {
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "failures": int(row["Failure Count"]),
    }
