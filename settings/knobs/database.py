"""PostgreSQL: where it is, how many connections a worker holds, backstops."""

from . import checks
from .knob import REQUIRED, Kind, Knob

KNOBS = (
    Knob(
        "DATABASE_URL",
        Kind.STRING,
        "`postgres://user:pass@host:5432/db`, or a unix socket as "
        "`postgres://user@%2Fvar%2Frun%2Fpostgresql/db`; empty: the embedded "
        "cluster in `.data/postgres`. Production refuses one that is not "
        "PostgreSQL with a host and a database. Query parameters set libpq's "
        "options (`?application_name=...&connect_timeout=5`), "
        "`disable_server_side_cursors=true` (behind PgBouncer in transaction "
        "mode) and, with `DB_POOL_SIZE=0` only, `conn_max_age`.",
        default_doc="embedded",
        production=REQUIRED,
        check=checks.database_url,
    ),
    Knob(
        "DB_POOL_SIZE",
        Kind.INTEGER,
        "Connections per worker in its bounded pool. Empty: read when the first "
        "connection opens, (`max_connections` − reserved slots − 10) ÷ workers "
        "(143 per worker for the embedded cluster's 300 and 2 workers). Set it "
        "behind PgBouncer, or when several hosts share the database. `0`: no "
        "pool, Django's own backend (threaded workers only).",
        default_doc="the database's budget",
        low=0,
    ),
    Knob(
        "DB_STATEMENT_TIMEOUT_MS",
        Kind.INTEGER,
        "Server-side `statement_timeout` of every connection: a backstop "
        "behind the request's own deadline.",
        default=30000,
        low=0,
    ),
)
