"""``--target``: measure a server this command did not start (the front door).

By default ``make loadtest`` and ``make capacity`` start their own stub upstream
and gunicorn. With ``--target URL`` they start nothing of the app (no gunicorn,
no database) and aim Locust at ``URL``: a gunicorn, or the reverse proxy in
front of one or several. What they cannot know about a server they did not
start is given with the target: ``--upstream-url`` (the stub its
``DEMO_UPSTREAM_URL`` points at, which the W1 baseline times directly),
``--server-pids`` (gunicorn masters, whose workers' CPU is sampled) and
``--proxy-pid`` (the proxy's master, sampled with its children). Without pids
no process CPU is sampled and the figures say so.

Any http(s) URL is accepted; this project's rule is that load is aimed only at
loopback on this machine, which is what the docs and tests do.
"""

import argparse
from dataclasses import dataclass
from urllib.parse import urlsplit

from devtools.ports import wait_for_http
from devtools.processes import Processes

# Seconds a target (or its stub) gets to answer before the run is called off.
REACH_TIMEOUT_S = 10.0
ONLY_WITH_TARGET = ("upstream_url", "server_pids", "proxy_pid")


@dataclass(frozen=True)
class Watch:
    """The processes a run samples CPU from: gunicorn masters and a proxy master."""

    server_pids: tuple[int, ...] = ()
    proxy_pid: int | None = None


def http_url(text: str) -> str:
    """An http(s) base URL without a trailing slash (an argparse ``type``)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT, got {text!r}")
    return text.rstrip("/")


def pid_list(text: str) -> tuple[int, ...]:
    """``PID[,PID]`` (an argparse ``type``)."""
    try:
        pids = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PID[,PID], got {text!r}") from None
    if not pids or min(pids) <= 0:
        raise argparse.ArgumentTypeError(f"expected PID[,PID], got {text!r}")
    return pids


def add_options(parser: argparse.ArgumentParser, *, upstream: bool) -> None:
    """``--target`` and what comes with it; ``upstream``: add ``--upstream-url``."""
    parser.add_argument(
        "--target",
        type=http_url,
        help="aim at this running server (start no gunicorn, no database)",
    )
    if upstream:
        parser.add_argument(
            "--upstream-url",
            type=http_url,
            help="with --target: the stub upstream the target fans out to",
        )
    parser.add_argument(
        "--server-pids",
        type=pid_list,
        default=(),
        metavar="PID[,PID]",
        help="with --target: gunicorn masters whose workers' CPU is sampled",
    )
    parser.add_argument(
        "--proxy-pid",
        type=int,
        metavar="PID",
        help="with --target: the proxy's master, CPU sampled with its children",
    )


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse target-only options without ``--target``, and ``--env`` with it:
    ``--env`` configures a server this command starts, and a target runs as its
    operator started it."""
    given = [name for name in ONLY_WITH_TARGET if getattr(args, name, None)]
    if given and not args.target:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(f"{options} only make sense with --target")
    if args.target and args.env:
        parser.error("--env sets a server this command starts; not with --target")


def watch(processes: Processes, host: str, args: argparse.Namespace) -> Watch:
    """What to sample while loading ``host``: the pids given with ``--target``,
    else the master of the gunicorn ``processes`` started there."""
    if args.target:
        return Watch(tuple(args.server_pids), args.proxy_pid)
    server = processes.servers.get(host)
    return Watch((server.pid,) if server is not None else ())


def reach(url: str, probe: str, what: str) -> None:
    """Fail clearly, before any load, when ``url`` does not answer ``probe``."""
    try:
        wait_for_http(url + probe, timeout=REACH_TIMEOUT_S)
    except TimeoutError:
        raise SystemExit(
            f"{what} {url} did not answer {probe} within {REACH_TIMEOUT_S:g} s"
        ) from None


def describe(args: argparse.Namespace) -> str:
    """What a run against a target samples, for its first line."""
    pids = ",".join(map(str, args.server_pids))
    workers = f"workers of {pids}" if pids else "worker CPU not sampled"
    proxy = f"proxy {args.proxy_pid}" if args.proxy_pid else "no proxy pid"
    return f"{args.target} (started nothing; {workers}; {proxy})"
