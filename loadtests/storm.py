"""``make storm``: admission control against clients that retry at once (issue 23).

The benchmark the issue's acceptance uses. Clients that ignore ``Retry-After``
and send the next request the moment a refusal arrives (wrk, most retry loops)
must not make a server with admission control answer fewer requests than the
same server without it. For each workload and case (gunicorn workers x
keep-alive connections) it starts, on loopback, the stub upstream once and per
round two fresh gunicorns one after the other: the defaults, and
``SHED_ENABLED=false`` (the order alternates between rounds). Each is driven by
a closed loop that retries at once for ``--warmup`` seconds, then measured for
``--seconds``.

The client is ``wrk`` when it is on PATH (``wrk -t2 -cN -dSs --latency``; AGG's
random ids through a small Lua script). Without it, a gevent client of this
module (one raw keep-alive HTTP/1.1 socket a connection) does the same; it is
Python on the cores the server uses, so it reaches lower rates than wrk, and
its figures are comparable only with its own.

Printed per case: 2xx answers a second with the defaults and with admission
off (medians over rounds), their ratio, the refusals (non-2xx answers) of the
defaults, and the p99 of every answer of each (wrk's, refusals included).
PASS needs the ratio at least 0.9 and, in every round where the run with
admission off kept its p99 within the 250 ms SLO, no refusal with the defaults
(a server within its SLO has no reason to refuse).

Exit status 0 when every case passed, 3 (``guards.GUARD_FAILED``) otherwise.

Usage: ``python -m loadtests.storm [--workloads W1,W2,AGG] [--cases
1x40,2x100,2x400] [--rounds 3] [--seconds 10] [--warmup 2] [--client
wrk|gevent] [--env KEY=VALUE ...]``
"""

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devtools.cli import add_env_option
from devtools.processes import Processes
from loadtests.harness.guards import GUARD_FAILED
from loadtests.harness.paths import REPORTS
from loadtests.harness.resources_report import cell
from loadtests.harness.servers import database_url, start_server

SLO_MS = 250.0
MIN_RATIO = 0.9
AGG_TOKEN = "bench-token-0123456789"
# A gevent client connection gives up on an answer after this long.
CLIENT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Workload:
    """What one workload requests and the server environment it needs.

    ``path`` may hold ``{id}``: a fresh random id per request, so the
    aggregation's single-flight never merges two of them.
    """

    path: str
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    needs_upstream: bool = False


WORKLOADS = {
    "W1": Workload("/demo/fan-out/?http=10&ms=50", needs_upstream=True),
    # W2's database budget in make loadtest: 32 connections a worker.
    "W2": Workload("/demo/slow-sql/?x=7&ms=50", env={"DB_POOL_SIZE": "32"}),
    "AGG": Workload(
        "/api/aggregate/bench/?id={id}&ms=50",
        env={
            "AGGREGATIONS_FILE": "loadtests/aggregations_bench.toml",
            "AGGREGATION_API_TOKENS": AGG_TOKEN,
            "DB_POOL_SIZE": "32",
        },
        headers={"Authorization": f"Bearer {AGG_TOKEN}"},
        needs_upstream=True,
    ),
}
CASES = ("1x40", "2x100", "2x400")
ADMISSION = {"on": {}, "off": {"SHED_ENABLED": "false"}}


@dataclass
class Result:
    """One measured run: 2xx and other answers, socket errors, p99 of all answers."""

    ok: int
    refused: int
    errors: int
    seconds: float
    p99_ms: float | None

    @property
    def ok_rps(self) -> float:
        """2xx answers a second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def parse_case(text: str) -> tuple[int, int]:
    """``"2x100"``: (workers, connections)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WORKERSxCONNECTIONS, got {text!r}")
    return int(match.group(1)), int(match.group(2))


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(output: str) -> Result:
    """wrk's ``--latency`` report: 2xx (all answers less "Non-2xx or 3xx"),
    refused (those), socket errors, the run's length and its p99."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    if not done:
        raise ValueError(f"not a wrk report: {output[-500:]!r}")
    answers = int(done.group(1))
    seconds = float(done.group(2)) * UNITS_MS[done.group(3)] / 1000.0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    refused = int(non2xx.group(1)) if non2xx else 0
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = sum(int(n) for n in sockets.groups()) if sockets else 0
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    p99_ms = float(p99.group(1)) * UNITS_MS[p99.group(2)] if p99 else None
    return Result(answers - refused, refused, errors, seconds, p99_ms)


def wrk_command(
    url: str, workload: Workload, connections: int, seconds: float, script: Path
) -> list[str]:
    """wrk's command line; a workload with ``{id}`` gets its ids from ``script``."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    for name, value in workload.headers.items():
        command += ["-H", f"{name}: {value}"]
    if "{id}" in workload.path:
        # Ids count up from a per-thread base: threads seeded alike would send
        # the same random ids at the same moments, which single-flight merges.
        script.write_text(
            "local threads = 0\n"
            "function setup(thread)\n"
            "  threads = threads + 1\n"
            "  thread:set('next_id', threads * 100000000)\n"
            "end\n"
            "function request()\n"
            "  next_id = next_id + 1\n"
            f"  local path = string.gsub('{workload.path}', '{{id}}', next_id)\n"
            "  return wrk.format(nil, path)\n"
            "end\n"
        )
        command += ["-s", str(script)]
    return [*command, url + workload.path.replace("{id}", "0")]


def run_wrk(url: str, workload: Workload, connections: int, seconds: float) -> Result:
    """Drive ``url`` with wrk; its report parsed."""
    with tempfile.TemporaryDirectory() as scratch:
        command = wrk_command(
            url, workload, connections, seconds, Path(scratch) / "ids.lua"
        )
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 30, check=True
        ).stdout
    return parse_wrk(output)


def run_gevent(
    url: str,
    workload: Workload,
    connections: int,
    seconds: float,
    source: str | None = None,
) -> Result:
    """Drive ``url`` with ``connections`` keep-alive sockets, each sending its
    next request the moment an answer (a refusal too) arrives; from the
    loopback address ``source`` when given (one client among several)."""
    import gevent

    parts = urlsplit(url)
    address = (parts.hostname, parts.port)
    deadline = time.monotonic() + seconds
    tally = {"ok": 0, "refused": 0, "errors": 0}
    latencies: list[float] = []
    extra = "".join(f"{k}: {v}\r\n" for k, v in workload.headers.items())
    greenlets = [
        gevent.spawn(
            _connection,
            address,
            workload.path,
            extra,
            deadline,
            tally,
            latencies,
            (source, 0) if source else None,
        )
        for _ in range(connections)
    ]
    started = time.monotonic()
    gevent.joinall(greenlets)
    return Result(
        tally["ok"],
        tally["refused"],
        tally["errors"],
        time.monotonic() - started,
        _p99(latencies),
    )


def _p99(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _connection(
    address: tuple,
    path: str,
    extra_headers: str,
    deadline: float,
    tally: dict[str, int],
    latencies: list[float],
    source_address: tuple[str, int] | None = None,
) -> None:
    """One client connection until ``deadline``: reconnects after a close or error."""
    from gevent import socket

    sock = None
    buffer = b""
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection(
                    address, timeout=CLIENT_TIMEOUT_S, source_address=source_address
                )
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = b""
            target = path.replace("{id}", str(random.randrange(10**9)))
            request = (
                f"GET {target} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                f"{extra_headers}\r\n"
            )
            start = time.monotonic()
            sock.sendall(request.encode())
            status, close, buffer = _read_response(sock, buffer)
            latencies.append((time.monotonic() - start) * 1000.0)
            tally["ok" if 200 <= status < 300 else "refused"] += 1
            if close:
                sock.close()
                sock = None
        except OSError:
            tally["errors"] += 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()


def _read_response(sock, buffer: bytes) -> tuple[int, bool, bytes]:
    """(status, whether the server closes, bytes past this answer) of one answer
    with a Content-Length body."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buffer += chunk
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        buffer += chunk
    return status, headers.get("connection", "").lower() == "close", buffer[length:]


CLIENTS = {"wrk": run_wrk, "gevent": run_gevent}


@dataclass
class Case:
    """One workload at one workers x connections: each round's on and off run."""

    workload: str
    workers: int
    connections: int
    rounds: list[dict[str, Result]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``W1 1x40``."""
        return f"{self.workload} {self.workers}x{self.connections}"


def median(values: list[float | None]) -> float | None:
    """The median of the figures there are; None without any."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def verdict(case: Case) -> tuple[bool, str]:
    """PASS/FAIL of a case and why: the median ratio of 2xx/s on / off at least
    0.9; no refusal in a round whose run without admission control met the SLO."""
    on = median([r["on"].ok_rps for r in case.rounds])
    off = median([r["off"].ok_rps for r in case.rounds])
    reasons = []
    if not on or not off or on / off < MIN_RATIO:
        reasons.append(f"on/off < {MIN_RATIO:g}")
    needless = [
        r["on"].refused
        for r in case.rounds
        if r["off"].p99_ms is not None and r["off"].p99_ms <= SLO_MS and r["on"].refused
    ]
    if needless:
        reasons.append(f"refused {sum(needless)} while off met the {SLO_MS:g} ms SLO")
    return not reasons, "; ".join(reasons)


def table(cases: list[Case]) -> str:
    """The Markdown table of every case: medians over rounds, refusals summed."""

    lines = [
        "| case | 2xx/s on | 2xx/s off | on/off | refused on | p99 on ms "
        "| p99 off ms | errors | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        on = median([r["on"].ok_rps for r in case.rounds])
        off = median([r["off"].ok_rps for r in case.rounds])
        ratio = on / off if on is not None and off else None
        ok, why = verdict(case)
        errors = sum(r[k].errors for r in case.rounds for k in ADMISSION)
        lines.append(
            f"| {case.name} | {cell(on, '{:.1f}')} | {cell(off, '{:.1f}')} "
            f"| {cell(ratio, '{:.2f}')} | {sum(r['on'].refused for r in case.rounds)} "
            f"| {cell(median([r['on'].p99_ms for r in case.rounds]), '{:.0f}')} "
            f"| {cell(median([r['off'].p99_ms for r in case.rounds]), '{:.0f}')} "
            f"| {errors} | {'PASS' if ok else 'FAIL: ' + why} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; every one optional."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.storm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--cases", default=",".join(CASES), help="WORKERSxCONNS,...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="driven, not kept")
    parser.add_argument(
        "--client",
        choices=list(CLIENTS),
        default="wrk" if shutil.which("wrk") else "gevent",
        help="default: wrk when on PATH",
    )
    add_env_option(parser, "server environment for both runs, e.g. SHED_MAX_LIMIT=64")
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    try:
        args.cases = [parse_case(c) for c in args.cases.split(",") if c]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error(
            "wrk is not on PATH (Debian: apt-get install wrk); --client gevent"
        )
    return args


def measure(
    processes: Processes,
    case: Case,
    label: str,
    upstream: str,
    args: argparse.Namespace,
) -> Result:
    """One fresh gunicorn with admission ``label`` ("on"/"off"), warmed, measured,
    stopped."""
    workload = WORKLOADS[case.workload]
    env = {
        **workload.env,
        **({"DEMO_UPSTREAM_URL": upstream} if workload.needs_upstream else {}),
        **dict(args.env),
        **ADMISSION[label],
    }
    url = start_server(
        processes, database_url=database_url(), workers=case.workers, env=env
    )
    drive = CLIENTS[args.client]
    try:
        if args.warmup > 0:
            drive(url, workload, case.connections, args.warmup)
        return drive(url, workload, case.connections, args.seconds)
    finally:
        processes.stop(processes.servers.pop(url))


def main(argv: list[str] | None = None) -> int:
    """Every round of every case; print the table; 0 when every case passed."""
    args = parse_args(argv)
    cases = [
        Case(workload, workers, connections)
        for workload in args.workloads
        for workers, connections in args.cases
    ]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(
        f"storm: {len(cases)} cases x {args.rounds} rounds, {args.client}, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s each, on and off",
        flush=True,
    )
    with Processes(log_dir=REPORTS / f"{stamp}-storm") as processes:
        upstream = processes.start_upstream()
        for number in range(args.rounds):
            for case in cases:
                # Alternating the order spreads drift on a shared machine evenly.
                labels = ("on", "off") if number % 2 == 0 else ("off", "on")
                results = {
                    label: measure(processes, case, label, upstream, args)
                    for label in labels
                }
                case.rounds.append(results)
                print(round_line(number + 1, case, results), flush=True)
    print()
    print(table(cases))
    failed = [case.name for case in cases if not verdict(case)[0]]
    print(f"\nstorm: {'FAILED ' + ', '.join(failed) if failed else 'passed'}")
    return GUARD_FAILED if failed else 0


def round_line(number: int, case: Case, results: dict[str, Result]) -> str:
    """One round of one case as it ends."""
    on, off = results["on"], results["off"]
    ratio = on.ok_rps / off.ok_rps if off.ok_rps else float("nan")
    return (
        f"round {number} {case.name:10} on {on.ok_rps:7.1f} 2xx/s "
        f"({on.refused} refused, p99 {on.p99_ms or 0:.0f} ms)  off "
        f"{off.ok_rps:7.1f} 2xx/s (p99 {off.p99_ms or 0:.0f} ms)  ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
