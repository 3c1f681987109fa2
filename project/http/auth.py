"""Bearer tokens: read from the request, compared in constant time."""

import hashlib
import hmac
from collections.abc import Iterable

from django.http import HttpRequest


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_matches(presented: str | None, tokens: Iterable[str]) -> bool:
    """Whether ``presented`` is one of ``tokens``, in constant time.

    Digests of equal length, every configured token checked whatever matched,
    so timing reveals neither a token nor which one.
    """
    digest = hashlib.sha256((presented or "").encode()).digest()
    matched = False
    for candidate in tokens:
        expected = hashlib.sha256(candidate.encode()).digest()
        matched |= hmac.compare_digest(digest, expected)
    return presented is not None and matched
