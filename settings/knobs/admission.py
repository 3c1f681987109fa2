"""Admission control: each gunicorn worker's adaptive limit on requests at once."""

from .knob import Kind, Knob

DEFAULT_ROUTES = (
    "/healthz=exempt,/readyz=exempt,/metrics=exempt,"
    "/api/aggregate/=critical,/demo/=sheddable"
)


def _routes(value: str) -> None:
    # Imported when read: the parser's package imports Django.
    from project.core.route_priority import RoutePriorities

    RoutePriorities.parse(value)


KNOBS = (
    Knob(
        "SHED_ENABLED",
        Kind.BOOLEAN,
        "Admission control in each worker (see `docs/overload.md`): over the "
        "worker's adaptive limit a request waits briefly for a slot or gets an "
        'immediate 503 `{"error": "overloaded", "reason": ...}` with '
        "`Retry-After`. `false`: every request is let in (every protection is "
        "measured against the same server with it off).",
        default=True,
    ),
    Knob(
        "SHED_ROUTES",
        Kind.STRING,
        "Priority by path prefix, longest prefix first: `exempt` (never refused, "
        "not counted), `critical` (served first, refused last), `normal` (any "
        "other path), `sheddable` (refused first; does not wait once the worker "
        "is refusing). A malformed rule stops the service.",
        default=DEFAULT_ROUTES,
        check=_routes,
        template=DEFAULT_ROUTES,
    ),
    Knob(
        "SHED_MAX_LIMIT",
        Kind.INTEGER,
        "Most requests a worker runs at once (it starts there; the limit falls "
        "under overload and grows back, never below 4 or this, whichever is "
        "less): a cap below `WORKER_CONNECTIONS` for a worker whose requests "
        "share a smaller resource, or one slot for a test. `0`: the default.",
        default_doc="`WORKER_CONNECTIONS`",
        low=0,
    ),
    Knob(
        "SHED_QUEUE_TIMEOUT_MS",
        Kind.INTEGER,
        "Longest wait for a slot. Once a wait has run out, waits are cut to 5 ms "
        "(or this, if less) "
        "and sheddable routes do not wait (CoDel), until the wait line has "
        "emptied and new requests no longer arrive faster than they complete.",
        default=100,
        low=0,
        high=60000,
    ),
)
