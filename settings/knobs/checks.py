"""Value checks the knobs share (stdlib only); each raises ValueError."""

from ipaddress import ip_network
from urllib.parse import urlsplit

MIN_TOKEN_LENGTH = 16


def tokens(values: list[str]) -> None:
    """Bearer tokens: none empty (a stray comma), none short enough to guess."""
    if any(len(token) < MIN_TOKEN_LENGTH for token in values):
        raise ValueError(f"every token needs at least {MIN_TOKEN_LENGTH} characters")


def networks(values: list[str]) -> None:
    """Addresses or CIDR blocks that parse (one that does not would lock out)."""
    for value in values:
        ip_network(value, strict=False)


def redis_url(url: str) -> None:
    """A URL redis-py opens."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")


def database_url(url: str) -> None:
    """A URL whose port, if any, is a number from 0 to 65535."""
    urlsplit(url).port  # noqa: B018  (raises ValueError on a bad port)
