"""Outbound HTTP and a request's time budget."""

from .knob import Kind, Knob

KNOBS = (
    Knob(
        "HTTP_POOL_MAXSIZE",
        Kind.INTEGER,
        "Most outbound connections per upstream per worker (and a worker's "
        "fan-out leg slots); when all are busy, further calls wait for one "
        "within their timeout. Under a low file-descriptor limit the default "
        "is half of what the limit leaves after `WORKER_CONNECTIONS` (at least "
        "16), so upstream sockets cannot starve accept(). A bound, not 10 × "
        "that: it keeps one slow upstream from taking every descriptor.",
        default_doc="`WORKER_CONNECTIONS`",
        low=1,
    ),
    Knob(
        "HTTP_POOL_IDLE_S",
        Kind.NUMBER,
        "Pooled outbound connections idle this long are closed, so a burst does "
        "not pin sockets (ours and the upstream's) for good; below an "
        "upstream's own keep-alive timeout, we close first.",
        default=30.0,
        low=0.1,
    ),
    Knob(
        "REQUEST_DEADLINE_MS",
        Kind.INTEGER,
        "A request's deadline when the client sends no `X-Request-Timeout-Ms` "
        "(which may ask for up to 60000).",
        default=15000,
        low=1,
    ),
)
