"""The resource part of the capacity report: CSV columns, Markdown table, plot.

Each measured step may carry ``resources`` (``observe.add_step_figures``):
worker CPU, loop lag, DB pool, upstream sockets, bulkhead and breakers over
the step's trimmed window, with each resource's utilisation.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt  # noqa: E402

from loadtests.harness.saturation import RESOURCES  # noqa: E402

# Appended to capacity.csv's columns, in this order.
COLUMNS = [
    "cpu_util",
    "host_cpu_util",
    "loop_lag_p99_ms",
    "db_in_use_max",
    "db_size",
    "db_wait_p95_ms",
    "db_waiting_max",
    "upstream_open_max",
    "bulkhead_busiest_max",
    "breaker_opens",
    "metrics",
    "saturated",
    "proxy_cpu_cores",
    "proxy_ms_per_request",
]


# A wait of seconds (utilisation 100+) would flatten every other line: the
# plot stops at twice the limit; the CSV and the table keep the values.
CLIP = 2.0


def csv_fields(step: dict) -> dict:
    """A step's resource columns (empty when unknown)."""
    figures = step.get("resources") or {}
    row = {}
    for column in COLUMNS:
        value = figures.get(column)
        if column == "saturated":
            value = "+".join(value or [])
        elif isinstance(value, float):
            value = round(value, 3)
        row[column] = "" if value is None else value
    return row


def cell(value: float | None, form: str) -> str:
    """A table cell: ``form`` applied, or '-' when unknown."""
    return "-" if value is None else form.format(value)


def table(steps: list[dict]) -> list[str]:
    """Markdown rows of each step's resources ("no metrics" when none came)."""
    lines = [
        "| users | worker CPU | host CPU | loop lag p99 ms | DB pool in use / size "
        "| checkout wait p95 ms | waiting max | upstream sockets | bulkhead max "
        "| breaker opens | saturated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        f = step.get("resources") or {}
        cpu = " | ".join(
            cell(f.get(key), "{:.0%}") for key in ("cpu_util", "host_cpu_util")
        )
        if not f.get("metrics"):
            lines.append(f"| {step['users']} | {cpu} | no metrics " + "| - " * 7 + "|")
            continue
        in_use, size = f.get("db_in_use_max"), f.get("db_size")
        pool = f"{cell(in_use, '{:.0f}')} / {cell(size, '{:.0f}')}"
        lines.append(
            f"| {step['users']} | {cpu} | {cell(f.get('loop_lag_p99_ms'), '{:.1f}')} "
            f"| {pool} | {cell(f.get('db_wait_p95_ms'), '{:.1f}')} "
            f"| {cell(f.get('db_waiting_max'), '{:.0f}')} "
            f"| {cell(f.get('upstream_open_max'), '{:.0f}')} "
            f"| {cell(f.get('bulkhead_busiest_max'), '{:.0f}')} "
            f"| {cell(f.get('breaker_opens'), '{:.0f}')} "
            f"| {', '.join(f.get('saturated', [])) or '-'} |"
        )
    return lines


def plot(
    path: Path, steps: list[dict], knee: dict | None, args: argparse.Namespace
) -> None:
    """Each resource's utilisation per step, its threshold (dotted) and the knee."""
    users = [s["users"] for s in steps]
    figure, axes = plt.subplots(figsize=(9, 6), dpi=110)
    colours = plt.get_cmap("tab10").colors
    top = 1.2
    for resource, colour in zip(RESOURCES, colours, strict=False):
        values = [
            (s.get("resources") or {}).get("utilisation", {}).get(resource.key)
            for s in steps
        ]
        if all(v is None for v in values):
            continue
        shown = [float("nan") if v is None else min(v, CLIP) for v in values]
        top = max(top, *(v for v in values if v is not None))
        axes.plot(users, shown, "o-", color=colour, label=resource.label)
        axes.axhline(resource.threshold, color=colour, linestyle=":", alpha=0.7)
    if knee is not None:
        axes.axvline(knee["users"], color="grey", linestyle="--", label="knee")
    axes.set_ylim(0, min(top, CLIP) * 1.05)
    axes.set_xlim(left=0)
    axes.set_xlabel("concurrent users")
    axes.set_ylabel(f"utilisation (dotted: thresholds; clipped at {CLIP:g})")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    axes.set_title(
        f"{args.scenario}: resource utilisation per step ({args.workers} workers)"
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
