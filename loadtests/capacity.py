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
5. Beyond the knee: an open-model run at ``--beyond`` (3) times the knee's
   throughput for ``--beyond-seconds``, which shows what the server's admission
   control makes of overload: the share refused, the admitted requests' p99,
   how fast refusals come back and the goodput (answers within the SLO).
   For W1 and W2 the open model is h2load's when it is on PATH (Debian's
   nghttp2-client, ``openloop.py``): Locust's on the server's own cores
   reaches about half of 3x a two-worker W1 knee. Otherwise Locust's.

During the step load the server's /metrics and CPU are scraped
(``harness/scrape.py``); each step gets resource figures and the knee a
verdict naming the first resource to saturate (``harness/saturation.py``).

Writes ``reports/<timestamp>-capacity-<scenario>/``: capacity.md (ending in the
recommendation), capacity.png (throughput and p95 vs users, with the fit),
capacity-resources.png (utilisation per step, thresholds, knee), capacity.csv,
and Locust's HTML/CSV of the runs (steps/, confirm/, beyond/).

The load generator runs on the same cores as the server, so the per-host
figures are pessimistic for a host that only serves.

With ``--target URL`` nothing of the app is started (``harness/target.py``):
the steps run against that server, e.g. an nginx in front of ``--instances``
gunicorns. The report then states the per-instance throughput (the knee's
req/s / N) and, with ``--proxy-pid``, the proxy's CPU ms per request at the
knee; ``--server-pids`` gives the gunicorn masters whose workers' CPU is
sampled. The scenario's own locustfile runs without same-run baselines, so no
stub URL is needed.

Usage: ``python -m loadtests.capacity [--scenario W1] [--target-rps 2000]
[--slo-p95-ms 200] [--step-users 10] [--step-seconds 10] [--step-count 12]
[--target URL [--instances N] [--server-pids PID[,PID]] [--proxy-pid PID]]``
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from devtools.cli import add_env_option
from devtools.processes import Processes
from loadtests import openloop
from loadtests.harness import (
    guards,
    observe,
    resources_report,
    saturation,
    target,
    usl,
)
from loadtests.harness.capacity_report import (
    conclusion,
    front_door,
    markdown,
    planned_rps,
    plot,
    write_csv,
)
from loadtests.harness.checks import GOODPUT_SUFFIX, SHED_SUFFIX
from loadtests.harness.locust_run import run_locust
from loadtests.harness.paths import REPORTS, STEP_SHAPE
from loadtests.harness.servers import database_url, start_server
from loadtests.harness.window import ADMITTED


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
        "--beyond", type=float, default=3.0, help="overload x the knee (0: skip)"
    )
    parser.add_argument("--beyond-seconds", type=float, default=30.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="gunicorn workers (with --target: each instance's, for the plan)",
    )
    parser.add_argument("--processes", type=int, default=0, help="Locust --processes")
    add_env_option(parser, "server env")
    parser.add_argument("--reports", type=Path, default=REPORTS)
    target.add_options(parser, upstream=False)
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="with --target: gunicorn instances behind it (per-instance req/s)",
    )
    args = parser.parse_args(argv)
    target.check_options(parser, args)
    if args.instances < 1 or (args.instances > 1 and not args.target):
        parser.error("--instances N (N >= 1) is for a --target with N instances")
    return args


def scenario_file(spec: dict) -> str:
    """The scenario's own locustfile (the first), without same-run baselines."""
    return spec["locustfile"].split(",")[0]


def measured_steps(result: dict) -> list[dict]:
    """The steps that have figures, as flat dicts (users, rps, p50_ms, ...).

    A step's resource figures, when it has them, stay nested (``resources``).
    """
    return [
        {"users": step["users"], **step["stats"]}
        | ({"resources": step["resources"]} if "resources" in step else {})
        for step in result.get("steps", [])
        if step.get("stats") and step["stats"]["requests"]
    ]


def step_options(args: argparse.Namespace) -> list[str]:
    """The step shape's options, passed on to Locust."""
    return [
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


def main(argv: list[str] | None = None) -> int:
    """Step run, fit, report, confirming run; 0 when a recommendation was made."""
    args = parse_args(argv)
    config = guards.load(args.guards)
    spec = config["scenarios"][args.scenario]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.reports / f"{stamp}-capacity-{args.scenario}"
    with Processes(log_dir=out / "servers") as processes:
        host, env = serve(processes, spec, args)
        steps = step_run(processes, spec, host, out, env, args)
        fit = None
        if len(steps) >= 3:
            fit = usl.fit([s["users"] for s in steps], [s["rps"] for s in steps])
        knee = usl.knee(steps, args.slo_p95_ms, args.slo_fail_ratio)
        sentence = conclusion(knee, fit, args)
        bound = saturation.verdict(steps, knee)
        report = write_reports(out, steps, fit, knee, (sentence, bound), args)
        if knee is not None:
            report += confirm(processes, spec, host, knee, fit, out, args)
            if args.beyond > 0:
                report += beyond_the_knee(processes, spec, host, knee, out, args)
        (out / "capacity.md").write_text(report)
    print()
    print(bound[:1].upper() + bound[1:])
    if args.target and knee is not None:
        print(front_door(knee, args))
    print(sentence)
    if knee is not None:
        print(hpa_target(knee))
    print(
        f"report: {out / 'capacity.md'} (plots capacity.png, capacity-resources.png;"
        " data capacity.csv)"
    )
    return 0 if knee is not None else 1


def hpa_target(knee: dict) -> str:
    """The HPA's target (deploy/kubernetes/base/autoscaling.yaml): the knee's
    event-loop busy ratio, less 20 % headroom for the pods still starting."""
    busy = knee.get("resources", {}).get("loop_busy_mean")
    if not busy:
        # 0 is the gauge never set: the loop is watched by admission control
        # only, so a run with SHED_ENABLED=false scrapes zeros, not a ratio.
        return (
            "HPA target: unknown (no gd_admission_loop_busy_ratio scraped at the "
            "knee; the event loop is measured with admission control on)"
        )
    return (
        f"HPA target: gd_admission_loop_busy_ratio averageValue "
        f"{round(busy * 0.8 * 1000)}m (the knee's {busy:.2f}, less 20 % headroom)"
    )


def serve(
    processes: Processes, spec: dict, args: argparse.Namespace
) -> tuple[str, dict[str, str] | None]:
    """The base URL to load and the server's environment (None: a target's).

    Starts the stub upstream and gunicorn, unless ``--target`` names a server.
    """
    if args.target:
        target.reach(args.target, "/healthz", "target")
        print(f"capacity: {args.scenario} against {target.describe(args)}")
        return args.target, None
    env = {**observe.METRICS_ENV, **spec.get("server_env", {}), **dict(args.env)}
    upstream = processes.start_upstream()
    host = start_server(
        processes,
        database_url=database_url(),
        mode=spec.get("server", "gevent"),
        workers=args.workers,
        env={"DEMO_UPSTREAM_URL": upstream, **env},
    )
    print(f"capacity: {args.scenario} against {host}, {args.workers} workers")
    return host, env


def step_run(
    processes: Processes,
    spec: dict,
    host: str,
    out: Path,
    env: dict[str, str] | None,
    args: argparse.Namespace,
) -> list[dict]:
    """The step load, with the server scraped: measured steps and their resources.

    ``env`` is the server's environment (HTTP_POOL_MAXSIZE sizes the upstream
    pools the figures are measured against), None for a target's.
    """
    with observe.scraping(host, target.watch(processes, host, args)) as scraper:
        run = run_locust(
            processes,
            [scenario_file(spec), STEP_SHAPE],
            host=host,
            users=args.step_users,
            seconds=args.step_count * args.step_seconds + 5,
            report_dir=out / "steps",
            options=step_options(args),
            local_processes=args.processes,
            echo=True,
        )
    observe.add_step_figures(
        scraper.samples,
        run.result,
        args.step_trim,
        cores=observe.worker_cores(
            observe.workers_seen(scraper.samples) if args.target else args.workers
        ),
        limit=observe.upstream_limit(env, args.workers),
    )
    observe.save(run)
    return measured_steps(run.result)


def write_reports(
    out: Path,
    steps: list[dict],
    fit: usl.Fit | None,
    knee: dict | None,
    sentences: tuple[str, str],
    args: argparse.Namespace,
) -> str:
    """capacity.csv and the plots; the Markdown (without the confirming run).

    ``sentences``: the recommendation and the resource verdict.
    """
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "capacity.csv", steps, fit)
    if steps:
        plot(out / "capacity.png", steps, fit, knee, args)
        resources_report.plot(out / "capacity-resources.png", steps, knee, args)
    sentence, bound = sentences
    return markdown(steps, fit, knee, sentence, args, verdict=bound)


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
    total = run.stats.get(ADMITTED)
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


def beyond_the_knee(
    processes: Processes,
    spec: dict,
    host: str,
    knee: dict,
    out: Path,
    args: argparse.Namespace,
) -> str:
    """Open model at ``--beyond`` x the knee's req/s; the overload line (Markdown)."""
    rate = args.beyond * knee["rps"]
    offered = f"{args.beyond:g} x {knee['rps']:.0f} req/s"
    path = OPEN_MODEL_PATHS.get(args.scenario)
    if path and shutil.which("h2load"):
        # Each connection waits for its answer: with too few, the answers'
        # latency sets the rate and the open model turns into a closed loop
        # the gate rightly never refuses (400 on two workers at 3x the W1
        # knee: 711 of 2,445 req/s sent, nothing refused, p99 1.1 s). A
        # connection each half second, within the workers' slots.
        most = CONNECTIONS_PER_WORKER * args.workers
        measured = openloop.run_open(host + path, rate, args.beyond_seconds, 5.0, most)
        text = "Beyond the knee: " + open_model_sentence(measured, knee, offered, args)
        print(text, flush=True)
        return "\n" + text + "\n"
    run = run_locust(
        processes,
        [scenario_file(spec)],
        host=host,
        users=max(knee["users"], 10),
        seconds=args.beyond_seconds,
        report_dir=out / "beyond",
        options=["--arrival-rate", f"{rate:.1f}", "--slo-ms", str(args.slo_p95_ms)],
        local_processes=args.processes,
    )
    text = "Beyond the knee: " + overload_sentence(
        run.stats, guards.main_endpoint(spec), knee, offered, args
    )
    print(text, flush=True)
    return "\n" + text + "\n"


# Most open-model connections per worker: below WORKER_CONNECTIONS (1,000),
# past which a full worker closes its idle connections to make room.
CONNECTIONS_PER_WORKER = 900
# The request of each scenario h2load can send (no headers, no random ids).
OPEN_MODEL_PATHS = {
    "W1": "/demo/fan-out/?http=10&ms=50",
    "W2": "/demo/slow-sql/?x=7&ms=50",
}


def open_model_sentence(
    run: openloop.Run, knee: dict, offered: str, args: argparse.Namespace
) -> str:
    """``overload_sentence`` for an h2load run."""
    if not run.rows:
        return "no steady-state figures."
    return _overload_line(
        offered,
        f"h2load, {args.beyond_seconds:g} s, {run.achieved_rps:.0f} req/s sent",
        run.refused / len(run.rows),
        (run.p(99), run.p(99, ok=False)),
        run.goodput_within(args.slo_p95_ms),
        knee,
        args,
    )


def overload_sentence(
    stats: dict[str, dict],
    endpoint: str,
    knee: dict,
    offered: str,
    args: argparse.Namespace,
) -> str:
    """What an overload run's steady state did with the offered load."""
    admitted = stats.get(endpoint) or {"requests": 0, "p99_ms": None}
    refused = stats.get(endpoint + SHED_SUFFIX) or {"requests": 0, "p99_ms": None}
    good = stats.get(endpoint + GOODPUT_SUFFIX) or {"rps": 0.0}
    total = admitted["requests"] + refused["requests"]
    if not total:
        return "no steady-state figures."
    return _overload_line(
        offered,
        f"{args.beyond_seconds:g} s",
        refused["requests"] / total,
        (admitted["p99_ms"], refused["p99_ms"]),
        good["rps"],
        knee,
        args,
    )


def _overload_line(
    offered: str,
    how: str,
    share: float,
    p99s: tuple[float | None, float | None],
    goodput: float,
    knee: dict,
    args: argparse.Namespace,
) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    admitted, refusals = p99s
    return (
        f"{offered} offered (open model, {how}): sheds {share:.1%}, admitted p99 "
        f"{ms(admitted)} (at the knee {ms(knee.get('p99_ms'))}), refusals p99 "
        f"{ms(refusals)}; goodput {goodput:.0f} req/s within {args.slo_p95_ms:g} ms "
        f"({goodput / knee['rps']:.0%} of the knee)."
    )


if __name__ == "__main__":
    sys.exit(main())
