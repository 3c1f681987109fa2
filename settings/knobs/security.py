"""Which settings module runs, its secret, the host names and HTTPS."""

from .knob import REQUIRED, Kind, Knob

KNOBS = (
    Knob(
        "ENVIRONMENT",
        Kind.STRING,
        "`development`, `production` or `test`: picks "
        "`settings/<ENVIRONMENT>.py`; `DJANGO_SETTINGS_MODULE`, when set, "
        "wins. Debug pages are on in development only.",
        default="development",
        choices=("development", "production", "test"),
        template="development",
    ),
    Knob(
        "SECRET_KEY",
        Kind.STRING,
        "Django's signing key. Production needs at least 50 characters, at least "
        "5 of them distinct; development and test use an obviously fake one.",
        default_doc="obviously fake",
        production=REQUIRED,
    ),
    Knob(
        "ALLOWED_HOSTS",
        Kind.LIST,
        "Comma-separated host names the service answers to. Production needs "
        'at least one once split (`" , "` is refused) and no wildcard (`*`).',
        default=["localhost", "127.0.0.1", "[::1]"],
        production=REQUIRED,
    ),
    Knob(
        "SECURE_SSL_REDIRECT",
        Kind.BOOLEAN,
        "Production, behind a proxy that terminates TLS and sets "
        "`X-Forwarded-Proto`: redirect HTTP to HTTPS (`/healthz`, `/readyz`, "
        "`/metrics` exempt).",
        default=True,
    ),
    Knob(
        "SECURE_HSTS_SECONDS",
        Kind.INTEGER,
        "Production's HSTS max-age (subdomains included, preload); `0` sends no HSTS.",
        default=60 * 60 * 24 * 365,
        low=0,
    ),
)
