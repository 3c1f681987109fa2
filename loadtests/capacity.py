"""``make capacity``: how many gevent workers a target load needs.

1. Starts, on loopback, the stub upstream and gunicorn (``--workers``, one per
   core by default) as ``make loadtest`` does, for one scenario of guards.toml.
2. Step load (``harness/step_shape.py``): ``--step-users`` more users every
   ``--step-seconds``, until a step's p95 exceeds the SLO or its failures exceed
   ``--slo-fail-ratio`` (or ``--step-count`` steps). Each step is measured on the
   master with its first ``--step-trim`` seconds (the ramp) cut off; one line per
   step is printed as it ends.
3. Fits the Universal Scalability Law to throughput vs users (``usl.py``), finds
   the knee (the busiest step within the SLO) and the workers/hosts the target
   needs at that per-host throughput.
4. A confirming run at the knee's users checks the prediction; prints the error.

Writes ``reports/<timestamp>-capacity-<scenario>/``: capacity.md (ending in the
recommendation), capacity.png (throughput and p95 vs users, with the fit),
capacity.csv, and Locust's HTML/CSV of both runs (steps/, confirm/).

The load generator runs on the same cores as the server, so the per-host
figures are pessimistic for a host that only serves.

Usage: ``python -m loadtests.capacity [--scenario W1] [--target-rps 2000]
[--slo-p95-ms 200] [--step-users 10] [--step-seconds 10] [--step-count 12]``
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.harness import guards, usl  # noqa: E402
from loadtests.harness.locust_run import run_locust  # noqa: E402
from loadtests.harness.paths import REPORTS, STEP_SHAPE  # noqa: E402
from loadtests.harness.processes import (  # noqa: E402
    Processes,
    add_env_option,
    database_url,
)
from loadtests.harness.window import AGGREGATED  # noqa: E402

COLUMNS = ["users", "rps", "p50_ms", "p95_ms", "p99_ms", "fail_ratio", "usl_rps"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; every one optional."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.capacity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--scenario", default="W1", help="a scenario of guards.toml")
    parser.add_argument("--guards", type=Path, default=guards.GUARDS_FILE)
    parser.add_argument("--target-rps", type=float, default=2000.0)
    parser.add_argument("--slo-p95-ms", type=float, default=200.0)
    parser.add_argument("--slo-fail-ratio", type=float, default=0.01)
    parser.add_argument("--step-users", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--step-trim", type=float, default=3.0)
    parser.add_argument("--step-count", type=int, default=12)
    parser.add_argument("--confirm-seconds", type=float, default=15.0)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="gunicorn workers"
    )
    parser.add_argument("--processes", type=int, default=0, help="Locust --processes")
    add_env_option(parser, "server env")
    parser.add_argument("--reports", type=Path, default=REPORTS)
    return parser.parse_args(argv)


def scenario_file(spec: dict) -> str:
    """The scenario's own locustfile (the first), without same-run baselines."""
    return spec["locustfile"].split(",")[0]


def measured_steps(result: dict) -> list[dict]:
    """The steps that have figures, as flat dicts (users, rps, p50_ms, ...)."""
    return [
        {"users": step["users"], **step["stats"]}
        for step in result.get("steps", [])
        if step.get("stats") and step["stats"]["requests"]
    ]


def write_csv(path: Path, steps: list[dict], fit: usl.Fit | None) -> None:
    """One row per step, with the fitted throughput."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for step in steps:
            writer.writerow(
                {**step, "usl_rps": round(float(fit(step["users"])), 1) if fit else ""}
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
) -> str:
    """The report's text (the confirming run is appended later)."""
    lines = [
        f"# Capacity: {args.scenario}",
        "",
        f"{args.workers} gevent workers on {os.cpu_count()} cores (the load "
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
    lines += ["", "![throughput and p95 vs users](capacity.png)", "", sentence, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Step run, fit, report, confirming run; 0 when a recommendation was made."""
    args = parse_args(argv)
    config = guards.load(args.guards)
    spec = config["scenarios"][args.scenario]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.reports / f"{stamp}-capacity-{args.scenario}"
    env = dict(args.env)
    shape = [
        "--step-users",
        str(args.step_users),
        "--step-seconds",
        str(args.step_seconds),
        "--step-trim",
        str(args.step_trim),
        "--step-count",
        str(args.step_count),
        "--slo-p95-ms",
        str(args.slo_p95_ms),
        "--slo-fail-ratio",
        str(args.slo_fail_ratio),
    ]
    with Processes(log_dir=out / "servers") as processes:
        upstream = processes.start_upstream()
        host = processes.start_gunicorn(
            database_url=database_url(),
            mode=spec.get("server", "gevent"),
            workers=args.workers,
            env={"DEMO_UPSTREAM_URL": upstream, **spec.get("server_env", {}), **env},
        )
        print(f"capacity: {args.scenario} against {host}, {args.workers} workers")
        run = run_locust(
            processes,
            [scenario_file(spec), STEP_SHAPE],
            host=host,
            users=args.step_users,
            seconds=args.step_count * args.step_seconds + 5,
            report_dir=out / "steps",
            options=shape,
            local_processes=args.processes,
            echo=True,
        )
        steps = measured_steps(run.result)
        fit = None
        if len(steps) >= 3:
            fit = usl.fit([s["users"] for s in steps], [s["rps"] for s in steps])
        knee = usl.knee(steps, args.slo_p95_ms, args.slo_fail_ratio)
        sentence = "No step met the SLO: no recommendation."
        if knee is not None:
            plan = usl.plan(
                target_rps=args.target_rps,
                per_host_rps=planned_rps(knee, fit),
                workers_per_host=args.workers,
                cores_per_host=os.cpu_count() or 1,
            )
            sentence = recommendation(plan, knee, fit, args)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "capacity.csv", steps, fit)
        if steps:
            plot(out / "capacity.png", steps, fit, knee, args)
        report = markdown(steps, fit, knee, sentence, args)
        if knee is not None:
            report += confirm(processes, spec, host, knee, fit, out, args)
        (out / "capacity.md").write_text(report)
    print()
    print(sentence)
    print(f"report: {out / 'capacity.md'} (plot capacity.png, data capacity.csv)")
    return 0 if knee is not None else 1


def confirm(
    processes: Processes,
    spec: dict,
    host: str,
    knee: dict,
    fit: usl.Fit | None,
    out: Path,
    args: argparse.Namespace,
) -> str:
    """Run at the knee's users; print and return the prediction error (Markdown).

    The prediction is the per-host throughput the plan rests on.
    """
    run = run_locust(
        processes,
        [scenario_file(spec)],
        host=host,
        users=knee["users"],
        seconds=args.confirm_seconds,
        report_dir=out / "confirm",
        local_processes=args.processes,
    )
    total = run.stats.get(AGGREGATED)
    if not total or not total["requests"]:
        text = "Confirming run: no steady-state figures."
    else:
        measured = total["rps"]
        met = total["p95_ms"] <= args.slo_p95_ms and (
            total["fail_ratio"] <= args.slo_fail_ratio
        )
        predicted = planned_rps(knee, fit)
        text = (
            f"Confirming run at {knee['users']} users: {measured:.0f} req/s measured "
            f"vs {predicted:.0f} predicted (error "
            f"{(measured - predicted) / predicted:+.1%})"
        )
        text += (
            f"; p95 {total['p95_ms']:.0f} ms, failures {total['fail_ratio']:.2%}: "
            f"SLO {'met' if met else 'MISSED'}."
        )
    print(text, flush=True)
    return "\n" + text + "\n"


if __name__ == "__main__":
    sys.exit(main())
