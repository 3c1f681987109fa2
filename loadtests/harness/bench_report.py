"""What ``python -m loadtests.bench`` prints: progress lines, medians, ratios."""

import argparse
import math
import statistics

from loadtests.harness.workloads.base import (
    HEADLINE,
    WORKERS,
    Ratio,
    Server,
    Workload,
)

# Each run's figures, by (server label, users), in round order.
Results = dict[tuple[str, int], list[dict]]


def progress_line(
    workload: Workload, round_number: int, label: str, users: int, result: dict
) -> str:
    """One run as it ends: Locust's figures, then the workload's own."""
    line = (
        f"round {round_number} {label:22} {users:4} users: "
        f"{result['rps']:7.1f} req/s  p50 {result['p50']:5.0f} ms  "
        f"p99 {result['p99']:6.0f} ms  failures {result['failures']}"
        f"  shed {result['shed']}"
    )
    details = workload.details(result)
    return f"{line}  {details}" if details else line


def print_medians(
    workload: Workload,
    servers: list[Server],
    args: argparse.Namespace,
    results: Results,
) -> None:
    """The median over rounds of every figure, one row per (users, server)."""
    columns = HEADLINE + workload.columns
    print(
        f"\n{workload.title}, {WORKERS} workers a server, "
        f"medians of {args.rounds} rounds"
    )
    print("| users | run | " + " | ".join(c.header for c in columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for users in args.users:
        for server in servers:
            runs = results[(server.label, users)]
            cells = [
                column.fmt.format(statistics.median(r[column.key] for r in runs))
                for column in columns
            ]
            print(f"| {users} | {server.label} | " + " | ".join(cells) + " |")


def same_round_ratio(pairs: list[tuple[dict, dict]], ratio: Ratio) -> float:
    """The median over rounds of ours / theirs (theirs / ours when inverse)."""
    key = ratio.key
    if ratio.inverse:
        pairs = [(theirs, ours) for ours, theirs in pairs]
    values = [top[key] / bottom[key] for top, bottom in pairs if bottom[key]]
    return statistics.median(values) if values else math.nan


def print_ratios(
    workload: Workload,
    comparisons: list[tuple[str, str, str]],
    users_levels: list[int],
    results: Results,
) -> None:
    """The same-round ratios of each comparison (label, ours, theirs)."""
    if not comparisons:
        return
    print("\nmedians of the same-round ratios")
    print(
        "| users | comparison | " + " | ".join(r.header for r in workload.ratios) + " |"
    )
    print("|---" * (len(workload.ratios) + 2) + "|")
    for users in users_levels:
        for label, ours, theirs in comparisons:
            pairs = list(
                zip(results[(ours, users)], results[(theirs, users)], strict=True)
            )
            cells = [f"{same_round_ratio(pairs, r):.2f}x" for r in workload.ratios]
            print(f"| {users} | {label} | " + " | ".join(cells) + " |")
