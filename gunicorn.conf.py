"""gunicorn configuration: gevent workers, one per core.

Values come from the settings table (``settings/knobs/``: the environment and
``.env``); gunicorn's own flags on its command line or in ``GUNICORN_CMD_ARGS``
override the rest. Nothing here imports Django:
the master must stay unpatched and Django-free, and each worker imports the
app only after gevent has patched it (``preload_app = False``).
"""

import gc
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import settings as _settings  # noqa: E402  (stdlib-only package; reads .env)
from project.core import metrics_dir  # noqa: E402  (stdlib only)
from settings import knobs as _knobs  # noqa: E402  (stdlib and django-environ)

_settings.load_env_file()
try:
    _knob = _knobs.read(os.environ)
except _knobs.KnobError as _error:
    sys.exit(f"gunicorn.conf.py: {_error}")

# Server socket
bind = _knob["BIND"]


def _control_socket(address: str) -> str:
    """``gunicornc``'s socket path, one per listen address.

    gunicorn's default is one path per user, so a second instance on the host
    (blue/green, tests, benchmarks) replaces the first's socket and ``gunicornc``
    would then steer the wrong server.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    folder = runtime if os.path.isdir(runtime) else os.path.expanduser("~/.gunicorn")
    return os.path.join(folder, "gunicorn-" + re.sub(r"[^\w.-]", "_", address) + ".ctl")


control_socket = _control_socket(bind)
backlog = 2048

# Worker processes
# One gevent worker per core: each holds worker_connections concurrent requests.
workers = _knob["WEB_CONCURRENCY"] or _settings.cores()
# gunicorn's gevent worker, accepting up to ACCEPT_BATCH connections per
# wake-up instead of 1 (see project/server/worker.py for why).
worker_class = "project.server.worker.GeventWorker"
worker_connections = _knob["WORKER_CONNECTIONS"]
# For gevent workers timeout is only a heartbeat; requests have their own deadline.
timeout = 30
graceful_timeout = _knob["GUNICORN_GRACEFUL_TIMEOUT"]
# Also bounds how long a request's headers may take to arrive (gevent worker):
# an idle or slowloris connection is closed after this many seconds, and
# earlier, oldest first, when the worker's connections run out.
keepalive = 5
# Request size limits (gunicorn's defaults, stated): a longer line or header is
# a 400 before any of our code runs. Bodies are refused by the app (413).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# Recycle workers now and then to bound slow leaks; jitter avoids all at once.
max_requests = 100000
max_requests_jitter = 10000
# Preloading would import Django in the unpatched master (MonkeyPatchWarning).
preload_app = False
wsgi_app = "wsgi:application"
chdir = str(Path(__file__).resolve().parent)

# Logging
accesslog = _knob["GUNICORN_ACCESS_LOG"]
errorlog = "-"
loglevel = "info"
capture_output = True
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
# LOG_FORMAT=json: gunicorn's lines as JSON too; no access lines for /metrics.
logger_class = "project.server.access_log.RequestLogger"
proc_name = "gevent-django"

# Server hooks

# The prometheus_client multiprocess directory of this server (on_starting).
_metrics: dict = {}


def on_starting(server) -> None:
    """Start the embedded PostgreSQL once, in the master, before any worker forks;
    raise the file-descriptor soft limit to the hard one for every worker."""
    from project.core.fd_budget import raise_soft_limit

    raise_soft_limit()
    _settings.select()
    _settings.ensure_embedded_database()
    _metrics["dir"], _metrics["created"] = metrics_dir.prepare()


def child_exit(server, worker) -> None:
    """A worker is gone: its live gauges (in flight, pool in use, ...) go with it."""
    metrics_dir.mark_dead(worker.pid)


def worker_exit(server, worker) -> None:
    """In the worker, as it exits: count a recycle (max_requests reached)."""
    from project.observability import workers

    workers.worker_exiting(worker)


def on_exit(server) -> None:
    """Remove the samples directory made at start (an operator's is kept)."""
    if _metrics.get("created"):
        metrics_dir.remove(_metrics["dir"])


# The collector's thresholds in a worker ((700, 10, 10) by default). A gen-0
# pass runs each time 700 more container objects are allocated than freed, and
# a fan-out allocates thousands that live as long as its request: one worker at
# 3x its W1 capacity ran 160 collections a second, 7 % of its CPU, with gen-1
# passes of up to 12 ms and full ones up to 27 ms holding the event loop. At
# these, under 20 in a 25 s run; same rounds, goodput 653/610 -> 886/813 req/s
# and refusals' p99 18/21 -> 11/10 ms.
GC_THRESHOLDS = (20_000, 20, 20)


def post_worker_init(worker) -> None:
    """Log the worker's concurrency and patching state (tests read it); warn when
    its worst case does not fit the file-descriptor limit; start the event-loop
    monitor and admission control; freeze what is loaded out of the collector."""
    from project import green
    from project.core import fd_budget
    from project.observability import workers
    from project.server.admission import runtime as admission

    fd_budget.check(upstreams=1)
    workers.worker_started(worker)
    admission.install(worker_connections)
    # Everything loaded so far (Django, the app, the registry) lives as long
    # as the worker: keep it out of the collector's full passes, whose pauses
    # hold the event loop (Instagram's gc.freeze). Measured on one worker at 3x
    # its W1 capacity, same rounds: refusals' p99 73/71 ms -> 38/41 ms.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    worker.log.info(
        "gevent worker %s ready (worker_connections=%s, patched=%s, frozen=%s, gc=%s)",
        worker.pid,
        worker_connections,
        green.is_patched(),
        gc.get_freeze_count(),
        ",".join(map(str, gc.get_threshold())),
    )
