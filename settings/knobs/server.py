"""gunicorn: where it listens, its processes and connections, its restarts."""

from .knob import Kind, Knob

KNOBS = (
    Knob(
        "BIND",
        Kind.STRING,
        "gunicorn's listen address; the default `DEMO_UPSTREAM_URL` is built from it.",
        default="127.0.0.1:8000",
    ),
    Knob(
        "WEB_CONCURRENCY",
        Kind.INTEGER,
        "gunicorn worker processes (one gevent worker per core).",
        default_doc="number of cores",
        low=1,
    ),
    Knob(
        "WORKER_CONNECTIONS",
        Kind.INTEGER,
        "Connections (and so concurrent requests, one greenlet each) per worker; "
        "admission control's limit starts here.",
        default=1000,
        low=1,
    ),
    Knob(
        "GUNICORN_GRACEFUL_TIMEOUT",
        Kind.INTEGER,
        "Seconds a worker has to finish its requests on a restart or stop.",
        default=30,
        low=0,
    ),
    Knob(
        "GEVENT_PATCH",
        Kind.BOOLEAN,
        "`0` skips monkey-patching (management commands that use "
        "multiprocessing, the threaded baseline). Read from the OS environment "
        "only: patching happens before `.env` is read.",
        default=True,
    ),
)
