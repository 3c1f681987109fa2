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

Exit status: 0 all guards passed, 3 (``guards.GUARD_FAILED``) a guard failed
or a run was aborted as hopeless, 1 a run did not complete.

Usage: ``python -m loadtests.loadtest [--scenarios W1,W2] [--seconds 10]
[--users 20] [--guards FILE] [--arrival-rate R] [--workers N]
[--processes N | --locust-workers N]
[--env KEY=VALUE ...]``
"""

import argparse
import sys
import time
from pathlib import Path

from loadtests.harness import guards, observe
from loadtests.harness.checks import GOODPUT_SUFFIX, SHED_SUFFIX
from loadtests.harness.locust_run import LocustRun, run_locust
from loadtests.harness.paths import BASE_DIR, REPORTS
from loadtests.harness.processes import Processes, add_env_option, database_url
from loadtests.harness.window import stats_from_json

RUN_FAILED = 1
DEFAULT_WORKERS = 2


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
    add_env_option(parser, "server environment override, e.g. HTTP_POOL_MAXSIZE=1")
    parser.add_argument("--reports", type=Path, default=REPORTS)
    return parser.parse_args(argv)


def scenario_specs(config: dict, args: argparse.Namespace) -> dict[str, dict]:
    """The scenarios to run, with command-line overrides applied.

    Without ``--scenarios``: every scenario not marked ``on_demand``.
    """
    names = [n for n in args.scenarios.split(",") if n] or [
        name for name, spec in config["scenarios"].items() if not spec.get("on_demand")
    ]
    unknown = [n for n in names if n not in config["scenarios"]]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {unknown}; known: {list(config['scenarios'])}"
        )
    specs = {}
    for name in names:
        spec = dict(config["scenarios"][name])
        for key in ("seconds", "users", "arrival_rate", "workers"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        spec.setdefault("workers", DEFAULT_WORKERS)
        specs[name] = spec
    return specs


def run_scenario(
    processes: Processes,
    name: str,
    spec: dict,
    *,
    host: str,
    upstream: str,
    report_dir: Path,
    args: argparse.Namespace,
    upstream_limit: float,
) -> LocustRun:
    """One headless Locust run of a scenario, its guards checked by the plugin.

    The server's /metrics and workers' CPU are scraped meanwhile; the steady
    window's resource figures go into the run's result and steady.json.
    """
    options = [
        "--scenario",
        name,
        "--guards",
        str(args.guards),
        "--upstream-url",
        upstream,
    ]
    for key in ("arrival_rate", "slo_ms", "request_timeout_ms"):
        if spec.get(key):
            options += ["--" + key.replace("_", "-"), str(spec[key])]
    with observe.scraping(processes, host) as scraper:
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
            cores=observe.worker_cores(spec["workers"]),
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
    if shed and shed["requests"]:
        admitted = stats.get(endpoint, {}).get("requests", 0)
        share = shed["requests"] / (admitted + shed["requests"])
        text += f"  shed {share:.1%} (p99 {shed['p99_ms'] or 0:.0f} ms)"
    good = stats.get(endpoint + GOODPUT_SUFFIX)
    if good and spec.get("slo_ms"):
        text += f"  goodput {good['rps']:.1f}/s within {spec['slo_ms']:g} ms"
    return text


def run_all(args: argparse.Namespace, specs: dict[str, dict]) -> dict[str, LocustRun]:
    """Run the scenarios against the servers they need; print a line per run."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs: dict[str, LocustRun] = {}
    with Processes(log_dir=args.reports / f"{stamp}-servers") as processes:
        upstream = processes.start_upstream()
        url = database_url()
        # One server per worker model and environment, shared by the scenarios.
        servers: dict[tuple, str] = {}
        for name, spec in specs.items():
            mode = spec.get("server", "gevent")
            server_env = {
                **observe.METRICS_ENV,
                "DEMO_UPSTREAM_URL": upstream,
                **spec.get("server_env", {}),
            }
            server_env.update(dict(args.env))
            workers = spec["workers"]
            key = (mode, workers, tuple(sorted(server_env.items())))
            if key not in servers:
                servers[key] = processes.start_gunicorn(
                    database_url=url, mode=mode, workers=workers, env=server_env
                )
            run = run_scenario(
                processes,
                name,
                spec,
                host=servers[key],
                upstream=upstream,
                report_dir=args.reports / f"{stamp}-{name}",
                args=args,
                upstream_limit=observe.upstream_limit(server_env, spec["workers"]),
            )
            runs[name] = run
            print(summary_line(name, spec, run), flush=True)
            print(f"{'':11} {observe.summary(run.result.get('resources'))}", flush=True)
    return runs


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
