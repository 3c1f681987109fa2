"""The reference endpoints (/demo/...): capacity probes."""

from .knob import Kind, Knob

KNOBS = (
    Knob(
        "DEMO_ENDPOINTS",
        Kind.BOOLEAN,
        "Serve `/demo/...`.",
        default=True,
        production=False,
    ),
    Knob(
        "DEMO_UPSTREAM_URL",
        Kind.STRING,
        "Base URL of the fan-out's HTTP legs (`{url}/delay?ms=D`). The default "
        "is built from `BIND`, never from a request's Host header.",
        default_doc="this server's `/demo`",
    ),
)
