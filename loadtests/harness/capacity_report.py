"""The capacity report: CSV, plot, Markdown and the recommendation it ends with."""

import argparse
import csv
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.harness import resources_report, usl  # noqa: E402

COLUMNS = ["users", "rps", "p50_ms", "p95_ms", "p99_ms", "fail_ratio", "usl_rps"]


def write_csv(path: Path, steps: list[dict], fit: usl.Fit | None) -> None:
    """One row per step, with the fitted throughput, then its resources."""
    columns = COLUMNS + resources_report.COLUMNS
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for step in steps:
            writer.writerow(
                {
                    **step,
                    "usl_rps": round(float(fit(step["users"])), 1) if fit else "",
                    **resources_report.csv_fields(step),
                }
            )


def plot(
    path: Path,
    steps: list[dict],
    fit: usl.Fit | None,
    knee: dict | None,
    args: argparse.Namespace,
) -> None:
    """Throughput (points + USL curve) and p95 (right axis) against users."""
    users = [s["users"] for s in steps]
    figure, left = plt.subplots(figsize=(9, 6), dpi=110)
    left.plot(users, [s["rps"] for s in steps], "o", color="tab:blue", label="req/s")
    if fit is not None:
        grid = np.linspace(1, max(users) * 1.3, 200)
        left.plot(
            grid,
            fit(grid),
            "-",
            color="tab:blue",
            alpha=0.6,
            label=f"USL fit (σ={fit.sigma:.4f}, κ={fit.kappa:.2e})",
        )
    left.set_xlabel("concurrent users")
    left.set_ylabel("throughput (req/s)", color="tab:blue")
    left.set_ylim(bottom=0)
    left.set_xlim(left=0)
    right = left.twinx()
    right.plot(
        users, [s["p95_ms"] for s in steps], "s--", color="tab:red", label="p95 (ms)"
    )
    right.axhline(args.slo_p95_ms, color="tab:red", linestyle=":", label="p95 SLO")
    right.set_ylabel("p95 latency (ms)", color="tab:red")
    right.set_ylim(bottom=0)
    if knee is not None:
        left.axvline(knee["users"], color="grey", linestyle="--", label="knee")
    handles = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    # Below the axes, where it hides no point or line.
    left.legend(
        handles[0] + more[0],
        handles[1] + more[1],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=3,
        frameon=False,
    )
    left.set_title(
        f"{args.scenario}: {args.workers} gevent workers, steps of "
        f"{args.step_users} users x {args.step_seconds:g} s"
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def planned_rps(knee: dict, fit: usl.Fit | None) -> float:
    """Per-host throughput the plan uses: the lower of the knee step and the fit.

    One step can be lucky (a quiet moment on a shared machine); the USL fit at
    the same users smooths that, and taking the lower keeps the plan safe.
    """
    if fit is None:
        return knee["rps"]
    return min(knee["rps"], float(fit(knee["users"])))


def recommendation(
    plan: usl.Plan, knee: dict, fit: usl.Fit | None, args: argparse.Namespace
) -> str:
    """The sentence the report ends with."""
    basis = f"the step measured {knee['rps']:,.0f}"
    if fit is not None:
        basis += f", the USL fit gives {float(fit(knee['users'])):,.0f}"
    return (
        f"To serve {plan.target_rps:,.0f} req/s of {args.scenario} at p95 < "
        f"{args.slo_p95_ms:g} ms you need {plan.workers} gevent workers "
        f"({plan.workers} cores / {plan.hosts} hosts like this one): one host "
        f"({plan.cores_per_host} cores, {plan.workers_per_host} workers) sustains "
        f"about {plan.per_host_rps:,.0f} req/s within the SLO at {knee['users']} "
        f"users ({basis})."
    )


def markdown(
    steps: list[dict],
    fit: usl.Fit | None,
    knee: dict | None,
    sentence: str,
    args: argparse.Namespace,
    verdict: str = "",
) -> str:
    """The report's text (the confirming run is appended later).

    ``verdict`` (``saturation.verdict``) and the steps' resources, when there
    are any, come after the knee.
    """
    lines = [
        f"# Capacity: {args.scenario}",
        "",
        f"{served_by(args)} on {os.cpu_count()} cores (the load "
        "generator shares them, so these figures are pessimistic for a host "
        f"that only serves). SLO: p95 < {args.slo_p95_ms:g} ms, failures "
        f"<= {args.slo_fail_ratio:.1%}. Steps of {args.step_users} users, "
        f"{args.step_seconds:g} s each, first {args.step_trim:g} s trimmed.",
        "",
        "| users | req/s | p50 ms | p95 ms | p99 ms | failures | USL req/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        fitted = f"{float(fit(s['users'])):.0f}" if fit else "-"
        lines.append(
            f"| {s['users']} | {s['rps']:.0f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} "
            f"| {s['p99_ms']:.0f} | {s['fail_ratio']:.2%} | {fitted} |"
        )
    lines.append("")
    if fit is not None:
        lines.append(
            f"USL fit: λ = {fit.lam:.1f} req/s per user, σ = {fit.sigma:.4f} "
            f"(contention), κ = {fit.kappa:.6f} (coherency); peak "
            f"{fit.peak_rps:,.0f} req/s at {fit.peak_users:.0f} users."
        )
    else:
        lines.append("USL fit: not enough steps (three or more are needed).")
    if knee is not None:
        lines.append(
            f"Knee: {knee['users']} users, {knee['rps']:.0f} req/s, "
            f"p95 {knee['p95_ms']:.0f} ms (the busiest step within the SLO)."
        )
        if args.target:
            lines.append(front_door(knee, args))
    if any("resources" in s for s in steps):
        lines += ["", "## Resources", "", *resources_report.table(steps), ""]
        lines += [verdict[:1].upper() + verdict[1:], ""]
        lines += ["![utilisation per step](capacity-resources.png)"]
    lines += ["", "![throughput and p95 vs users](capacity.png)", "", sentence, ""]
    return "\n".join(lines)


def conclusion(knee: dict | None, fit: usl.Fit | None, args: argparse.Namespace) -> str:
    """The recommendation from the knee, or why there is none."""
    if knee is None:
        return "No step met the SLO: no recommendation."
    plan = usl.plan(
        target_rps=args.target_rps,
        per_host_rps=planned_rps(knee, fit),
        workers_per_host=workers_per_host(args),
        cores_per_host=os.cpu_count() or 1,
    )
    return recommendation(plan, knee, fit, args)


def workers_per_host(args: argparse.Namespace) -> int:
    """Workers on this host: ``--workers`` in each of ``--instances``."""
    return args.workers * args.instances


def served_by(args: argparse.Namespace) -> str:
    """What served the steps, for the report's first line."""
    if not args.target:
        return f"{args.workers} gevent workers"
    return (
        f"{args.target} (not started here: {args.instances} instance(s) of "
        f"{args.workers} workers, as declared)"
    )


def front_door(knee: dict, args: argparse.Namespace) -> str:
    """Per-instance throughput behind the target, and the proxy's CPU per request,
    at the knee."""
    per_instance = knee["rps"] / args.instances
    text = (
        f"Through {args.target}: {per_instance:,.0f} req/s per instance at the knee "
        f"({knee['rps']:,.0f} req/s / {args.instances} instance(s))"
    )
    figures = knee.get("resources") or {}
    cost = figures.get("proxy_ms_per_request")
    if cost is not None:
        text += (
            f"; the proxy used {cost:.3f} ms CPU per request "
            f"({figures['proxy_cpu_cores']:.2f} cores)"
        )
    elif args.proxy_pid:
        text += "; proxy CPU not measured (no samples in the knee's window)"
    else:
        text += "; proxy CPU not sampled (no --proxy-pid)"
    return text + "."
