"""``make loadtest``: short headless runs of every scenario, then the guards.

Starts on loopback the stub upstream and, per worker model the scenarios need
(gevent; gthread for the baseline), one gunicorn with the project's
``gunicorn.conf.py`` (2 workers, or the scenario's ``workers``) on the
embedded development cluster (or ``DATABASE_URL``). Runs each scenario of
``guards.toml`` (those marked ``on_demand`` only when named) with Locust, whose
plugin checks that scenario's guards on the steady state; then checks the
ratios between scenarios, prints one table of what passed and failed, and
stops exactly what it started. Reports (Locust's HTML and CSV, steady.json)
go under ``reports/<timestamp>-<scenario>/``. The server's /metrics and CPU
are scraped during each run: the steady state's resource figures are printed
under the run's line and added to its steady.json (``resources``).

A scenario with ``retry_policy = "at-once"`` runs users that retry a refusal
at once instead of waiting its ``Retry-After`` (``harness/scenario_user.py``).
A scenario with ``arrival_x_capacity = X`` is first measured: a short
closed-model step load against the same server configuration with admission
control off (``harness/capacity_probe.py``, once per locustfile and server)
gives the capacity, and the run is offered X times it (``--arrival-rate``
still wins); its ``min_capacity_ratio`` guards divide by that capacity.

With ``--target URL`` nothing of the app is started (no gunicorn, no
database): every scenario runs against that server as its operator started it
(``harness/target.py``). A scenario whose guards compare with the stub's own
latency (its locustfiles include ``upstream_baseline.py``) then needs
``--upstream-url``, the stub the target fans out to; without it the command
refuses before any load. Scenarios that are another worker model (``server =
"gthread"``) are left out unless named, and ``server_env`` is not applied.

Exit status: 0 all guards passed, 3 (``guards.GUARD_FAILED``) a guard failed
or a run was aborted as hopeless, 1 a run did not complete.

Usage: ``python -m loadtests.loadtest [--scenarios W1,W2] [--seconds 10]
[--users 20] [--guards FILE] [--arrival-rate R] [--workers N]
[--retry-policy retry-after|at-once]
[--processes N | --locust-workers N]
[--env KEY=VALUE ...] [--target URL [--upstream-url URL]
[--server-pids PID[,PID]] [--proxy-pid PID]]``
"""

import argparse
import sys
import time
from pathlib import Path

from devtools.cli import add_env_option
from devtools.processes import Processes
from loadtests.harness import capacity_probe, guards, observe, target
from loadtests.harness.checks import GOODPUT_SUFFIX, RETRY_POLICIES, SHED_SUFFIX
from loadtests.harness.locust_run import LocustRun, run_locust
from loadtests.harness.paths import BASE_DIR, REPORTS
from loadtests.harness.servers import database_url, start_server
from loadtests.harness.window import stats_from_json

RUN_FAILED = 1
DEFAULT_WORKERS = 2
# The locustfile that times the stub upstream directly (a same-run baseline).
UPSTREAM_BASELINE = "upstream_baseline.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; every one optional."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.loadtest", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--scenarios", default="", help="comma-separated; default all")
    parser.add_argument("--guards", type=Path, default=guards.GUARDS_FILE)
    parser.add_argument("--seconds", type=float, help="override every scenario's")
    parser.add_argument("--users", type=int, help="override every scenario's")
    parser.add_argument(
        "--arrival-rate", type=float, help="open model for every scenario: req/s"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help=f"gunicorn workers (default: the scenario's, else {DEFAULT_WORKERS})",
    )
    distributed = parser.add_mutually_exclusive_group()
    distributed.add_argument(
        "--processes", type=int, default=0, help="Locust --processes N (one machine)"
    )
    distributed.add_argument(
        "--locust-workers",
        type=int,
        default=0,
        help="a Locust master and N --worker processes on loopback",
    )
    parser.add_argument(
        "--retry-policy",
        choices=RETRY_POLICIES,
        help="override every scenario's: after a refusal, wait Retry-After or not",
    )
    add_env_option(parser, "server environment override, e.g. HTTP_POOL_MAXSIZE=1")
    parser.add_argument("--reports", type=Path, default=REPORTS)
    target.add_options(parser, upstream=True)
    args = parser.parse_args(argv)
    target.check_options(parser, args)
    if args.target and args.workers is not None:
        parser.error("--workers sets a server this command starts; not with --target")
    return args


def scenario_specs(config: dict, args: argparse.Namespace) -> dict[str, dict]:
    """The scenarios to run, with command-line overrides applied.

    Without ``--scenarios``: every scenario not marked ``on_demand`` (with
    ``--target``, not another worker model either: the target is one server).
    """
    names = [n for n in args.scenarios.split(",") if n] or default_names(config, args)
    unknown = [n for n in names if n not in config["scenarios"]]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {unknown}; known: {list(config['scenarios'])}"
        )
    specs = {}
    for name in names:
        spec = dict(config["scenarios"][name])
        for key in ("seconds", "users", "arrival_rate", "workers", "retry_policy"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        spec.setdefault("workers", DEFAULT_WORKERS)
        specs[name] = spec
    if args.target and not args.upstream_url:
        refuse_baselines(specs)
    return specs


def default_names(config: dict, args: argparse.Namespace) -> list[str]:
    """The scenarios run when none are named."""
    return [
        name
        for name, spec in config["scenarios"].items()
        if not spec.get("on_demand")
        and not (args.target and spec.get("server", "gevent") != "gevent")
    ]


def refuse_baselines(specs: dict[str, dict]) -> None:
    """Stop before any load when a scenario would time a stub nobody named.

    Its ratio guard against the stub's own latency would fail for want of a
    baseline, which says nothing about the target; failing here says why.
    """
    needing = [n for n, s in specs.items() if UPSTREAM_BASELINE in s["locustfile"]]
    if needing:
        raise SystemExit(
            f"{', '.join(needing)}: with --target, --upstream-url is needed (the "
            "stub upstream the target's DEMO_UPSTREAM_URL points at, timed directly "
            "as the same-run baseline); give it, or run other --scenarios"
        )


def run_scenario(
    processes: Processes,
    name: str,
    spec: dict,
    *,
    host: str,
    upstream: str,
    report_dir: Path,
    args: argparse.Namespace,
    upstream_limit: float | None,
) -> LocustRun:
    """One headless Locust run of a scenario, its guards checked by the plugin.

    The server's /metrics and workers' CPU (and a proxy's, when given) are
    scraped meanwhile; the steady window's resource figures go into the run's
    result and steady.json.
    """
    options = [
        "--scenario",
        name,
        "--guards",
        str(args.guards),
        "--upstream-url",
        upstream,
    ]
    for key in (
        "arrival_rate",
        "slo_ms",
        "request_timeout_ms",
        "retry_policy",
        "capacity_rps",
    ):
        if spec.get(key):
            options += ["--" + key.replace("_", "-"), str(spec[key])]
    watch = target.watch(processes, host, args)
    with observe.scraping(host, watch) as scraper:
        run = run_locust(
            processes,
            spec["locustfile"].split(","),
            host=host,
            users=int(spec.get("users", 20)),
            seconds=float(spec.get("seconds", 10)),
            report_dir=report_dir,
            options=options,
            local_processes=args.processes,
            workers=args.locust_workers,
        )
    if run.result:  # empty: the run did not complete, and must still say so
        run.result["resources"] = observe.steady_figures(
            scraper.samples,
            run.result,
            cores=observe.worker_cores(
                observe.workers_seen(scraper.samples)
                if args.target
                else spec["workers"]
            ),
            limit=upstream_limit,
        )
        observe.save(run)
    return run


def shown(path: Path) -> str:
    """``path`` relative to the project when inside it."""
    return (
        str(path.relative_to(BASE_DIR)) if path.is_relative_to(BASE_DIR) else str(path)
    )


def summary_line(name: str, spec: dict, run: LocustRun) -> str:
    """One line per run: the main endpoint's figures, verdict, where the report is."""
    total = run.stats.get(guards.main_endpoint(spec))
    figures = (
        f"{total['rps']:7.1f} req/s  p50 {total['p50_ms'] or 0:4.0f} ms  "
        f"p95 {total['p95_ms'] or 0:4.0f} ms  failures {total['fail_ratio']:.2%}"
        if total
        else "no steady-state figures"
    )
    verdict = {0: "pass", guards.GUARD_FAILED: "FAIL"}.get(
        run.returncode, f"run failed (exit {run.returncode})"
    )
    if run.result.get("aborted"):
        verdict = "ABORTED"
    late = (
        f"  late starts {run.result['late_starts']}/{run.result['scheduled']}"
        if run.result.get("arrival_rate")
        else ""
    )
    return (
        f"{name:11} {figures}{overload_figures(spec, run.stats)}{late}  {verdict}"
        f"  {shown(run.report_dir)}"
    )


def overload_figures(spec: dict, stats: dict[str, dict]) -> str:
    """Refusals and goodput of the main endpoint, when there were any."""
    endpoint = guards.main_endpoint(spec)
    text = ""
    shed = stats.get(endpoint + SHED_SUFFIX)
    share = guards.shed_ratio(stats_from_json(stats), endpoint)
    if shed and share:
        text += f"  shed {share:.1%} (p99 {shed['p99_ms'] or 0:.0f} ms)"
    good = stats.get(endpoint + GOODPUT_SUFFIX)
    if good and spec.get("slo_ms"):
        text += f"  goodput {good['rps']:.1f}/s within {spec['slo_ms']:g} ms"
        if spec.get("capacity_rps"):
            text += f" = {good['rps'] / spec['capacity_rps']:.2f}x capacity"
    return text


def run_all(args: argparse.Namespace, specs: dict[str, dict]) -> dict[str, LocustRun]:
    """Run the scenarios against the servers they need; print a line per run."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs: dict[str, LocustRun] = {}
    with Processes(log_dir=args.reports / f"{stamp}-servers") as processes:
        if args.target:
            upstream = reach_target(args, specs)
        else:
            upstream = processes.start_upstream()
        # One server per worker model and environment, shared by the scenarios.
        servers: dict[tuple, str] = {}
        capacities: dict[tuple, capacity_probe.Capacity | None] = {}
        for name, spec in specs.items():
            if spec.get("arrival_x_capacity"):
                measured = offer_capacity(
                    processes, name, spec, upstream, args, servers, capacities, stamp
                )
                if measured is None:
                    runs[name] = LocustRun(RUN_FAILED, args.reports / f"{stamp}-{name}")
                    print(f"{name:11} no capacity measured: not run", flush=True)
                    continue
            if args.target:
                host, server_env = args.target, None
            else:
                host, server_env = own_server(processes, spec, upstream, args, servers)
            run = run_scenario(
                processes,
                name,
                spec,
                host=host,
                upstream=upstream,
                report_dir=args.reports / f"{stamp}-{name}",
                args=args,
                upstream_limit=observe.upstream_limit(server_env, spec["workers"]),
            )
            runs[name] = run
            print(summary_line(name, spec, run), flush=True)
            print(f"{'':11} {observe.summary(run.result.get('resources'))}", flush=True)
    return runs


def offer_capacity(
    processes: Processes,
    name: str,
    spec: dict,
    upstream: str,
    args: argparse.Namespace,
    servers: dict[tuple, str],
    capacities: dict[tuple, capacity_probe.Capacity | None],
    stamp: str,
) -> capacity_probe.Capacity | None:
    """Measure (once per locustfile and server) the capacity with admission off;
    set ``spec``'s arrival rate to ``arrival_x_capacity`` times it, unless
    ``--arrival-rate`` set one, and its ``capacity_rps``; print both.

    With ``--target`` the target is measured as its operator runs it.
    """
    locustfile = spec["locustfile"].split(",")[0]
    if args.target:
        host, key = args.target, (locustfile,)
    else:
        probed = {**spec, "server_env": {**spec.get("server_env", {})}}
        probed["server_env"].update(capacity_probe.ADMISSION_OFF)
        host, server_env = own_server(processes, probed, upstream, args, servers)
        key = (locustfile, spec["workers"], tuple(sorted(server_env.items())))
    if key not in capacities:
        capacities[key] = capacity_probe.measure(
            processes,
            locustfile,
            host=host,
            slo_ms=float(spec.get("slo_ms", 250)),
            report_dir=args.reports / f"{stamp}-{name}-capacity",
        )
    measured = capacities[key]
    if measured is None:
        return None
    factor = float(spec["arrival_x_capacity"])
    if args.arrival_rate is None:
        spec["arrival_rate"] = round(factor * measured.rps, 1)
    spec["capacity_rps"] = measured.rps
    where = "the target" if args.target else "admission off"
    print(
        f"{name:11} capacity {measured.rps:.1f} req/s answered ({where}, "
        f"{spec['workers']} worker(s), knee at {measured.users} users, p99 "
        f"{measured.p99_ms:.0f} ms; {shown(measured.report_dir)}): offering "
        f"{spec['arrival_rate']:g} req/s = {spec['arrival_rate'] / measured.rps:.2f}x",
        flush=True,
    )
    return measured


def reach_target(args: argparse.Namespace, specs: dict[str, dict]) -> str:
    """Check the target (and its stub) answer; say what is not applied to it.

    Returns the stub's URL, empty when none was given.
    """
    print(f"loadtest: against {target.describe(args)}", flush=True)
    target.reach(args.target, "/healthz", "target")
    if args.upstream_url:
        target.reach(args.upstream_url, "/delay?ms=0", "stub upstream")
    for name, spec in specs.items():
        if spec.get("server_env") or spec.get("server", "gevent") != "gevent":
            print(
                f"{name}: runs against the target as it is (its server "
                f"{spec.get('server', 'gevent')}, {spec.get('server_env', {})} "
                "are the target operator's to set)",
                flush=True,
            )
    return args.upstream_url or ""


def own_server(
    processes: Processes,
    spec: dict,
    upstream: str,
    args: argparse.Namespace,
    servers: dict[tuple, str],
) -> tuple[str, dict[str, str]]:
    """The gunicorn ``spec`` needs (started unless ``servers`` has it): its base
    URL and environment."""
    mode = spec.get("server", "gevent")
    server_env = {
        **observe.METRICS_ENV,
        "DEMO_UPSTREAM_URL": upstream,
        **spec.get("server_env", {}),
    }
    server_env.update(dict(args.env))
    key = (mode, spec["workers"], tuple(sorted(server_env.items())))
    if key not in servers:
        # One server at a time: each holds database connections of its own,
        # and the embedded cluster's 300 ran out once the storm pairs (and
        # W3's default pool) kept theirs open ("too many clients").
        for old_key, url in list(servers.items()):
            processes.stop(processes.servers.pop(url))
            del servers[old_key]
        servers[key] = start_server(
            processes,
            database_url=database_url(),
            mode=mode,
            workers=spec["workers"],
            env=server_env,
        )
    return servers[key], server_env


def verdict(runs: dict[str, LocustRun], checks: list[guards.Check]) -> int:
    """Print what was aborted and the outcome; return the exit status."""
    for name, run in runs.items():
        if run.result.get("aborted"):
            print(f"{name} aborted early: {run.result['aborted']}")
    crashed = [
        name
        for name, run in runs.items()
        if run.returncode not in (0, guards.GUARD_FAILED) or not run.result
    ]
    failed = [c for c in checks if not c.ok]
    aborted = [n for n, r in runs.items() if r.result.get("aborted")]
    if crashed:
        print(f"\nloadtest: run(s) did not complete: {', '.join(crashed)}")
        return RUN_FAILED
    if failed or aborted:
        print(f"\nloadtest: FAILED, {len(failed)} of {len(checks)} guards")
        return guards.GUARD_FAILED
    print(f"\nloadtest: passed, {len(checks)} guards")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios, print the guard table, return the exit status."""
    args = parse_args(argv)
    config = guards.load(args.guards)
    runs = run_all(args, scenario_specs(config, args))
    checks = [
        guards.Check(**check)
        for run in runs.values()
        for check in run.result.get("checks", [])
    ]
    checks += guards.evaluate_cross(
        config["ratios"],
        {name: stats_from_json(run.stats) for name, run in runs.items()},
    )
    print()
    print(guards.format_table(checks))
    return verdict(runs, checks)


if __name__ == "__main__":
    sys.exit(main())
