"""Production's refusals: settings that parse but mean nothing safe.

Each function takes a raw value, returns what production uses, and raises
``ImproperlyConfigured`` naming the key and what is wrong, so the service
stops before it serves (gunicorn's master reads the settings before it forks).
Values that are secrets are never echoed.
"""

from ipaddress import IPv4Network, IPv6Network, ip_network
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

# Django's own bar for a key that is not guessable (security.W009).
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_DISTINCT = 5
# The schemes django-environ reads as Django's PostgreSQL backend.
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "psql")
# Who may be let in to /metrics by address: loopback and private ranges only.
SCRAPER_NETWORKS = tuple(
    ip_network(block)
    for block in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    )
)


def secret_key(value: str) -> str:
    """``value`` if it is long and varied enough to sign with."""
    if len(value) < SECRET_KEY_MIN_LENGTH:
        raise ImproperlyConfigured(
            f"SECRET_KEY has {len(value)} characters; production needs at least "
            f"{SECRET_KEY_MIN_LENGTH} (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))')"
        )
    distinct = len(set(value))
    if distinct < SECRET_KEY_MIN_DISTINCT:
        raise ImproperlyConfigured(
            f"SECRET_KEY has {distinct} distinct characters; production needs at "
            f"least {SECRET_KEY_MIN_DISTINCT} (a random key, not a repeated one)"
        )
    return value


def allowed_hosts(hosts: list[str]) -> list[str]:
    """``hosts`` (``ALLOWED_HOSTS`` split on commas) if at least one, no wildcard."""
    if not hosts:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS names no host (it is empty after splitting on commas)"
        )
    wild = [host for host in hosts if "*" in host]
    if wild:
        raise ImproperlyConfigured(
            f"ALLOWED_HOSTS has a wildcard ({', '.join(wild)}): any Host header "
            "would be let in; list the names the service answers to"
        )
    return hosts


def database_url(url: str) -> None:
    """Refuse a ``DATABASE_URL`` that is not PostgreSQL with a host and a database.

    Without this, a wrong URL is found at the first query, after the service
    has started answering.
    """
    parts = urlsplit(url)
    example = "postgres://user:password@host:5432/name"
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL is not a PostgreSQL URL ({example}, or "
            "postgres://user@%2Fpath%2Fto%2Fsocket-dir/name)"
        )
    if not unquote(parts.hostname or ""):
        raise ImproperlyConfigured(
            f"DATABASE_URL names no host or socket directory ({example})"
        )
    if not unquote(parts.path.lstrip("/")):
        raise ImproperlyConfigured(f"DATABASE_URL names no database ({example})")


def metrics_networks(
    networks: list[IPv4Network | IPv6Network],
) -> list[IPv4Network | IPv6Network]:
    """``networks`` if each lies within loopback or a private range."""
    for network in networks:
        if not any(
            network.version == allowed.version and network.subnet_of(allowed)  # type: ignore[arg-type]
            for allowed in SCRAPER_NETWORKS
        ):
            raise ImproperlyConfigured(
                f"METRICS_ALLOW_IPS: {network} is wider than or outside loopback "
                "and private ranges (127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, "
                "192.168.0.0/16, fc00::/7); scrapers elsewhere use METRICS_TOKENS"
            )
    return networks
