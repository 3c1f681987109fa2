"""The aggregation API: its registry and who may call it."""

from . import checks
from .knob import REQUIRED, Kind, Knob

KNOBS = (
    Knob(
        "AGGREGATIONS_FILE",
        Kind.STRING,
        'The aggregation registry (TOML, see "Aggregation API"); validated at '
        "start-up. Production requires its own: the worked example has test "
        "knobs (`ms`, `reviews_status`) that let any token holder open a breaker.",
        default_doc="`examples/aggregations.toml`",
        production=REQUIRED,
    ),
    Knob(
        "AGGREGATION_API_TOKENS",
        Kind.LIST,
        "Comma-separated bearer tokens `/api/aggregate/` accepts; empty: every "
        "request is a 401. An empty entry (a stray comma) or a token shorter "
        "than 16 characters stops the service.",
        default=[],
        empty_items=False,
        check=checks.tokens,
    ),
)
