"""Bearer-token authentication for the aggregation API."""

import hashlib
import hmac

from django.conf import settings
from django.http import HttpRequest

from project.http.errors import ApiError


def check_bearer_token(request: HttpRequest) -> None:
    """Raise a 401 unless the request carries one of ``AGGREGATION_API_TOKENS``.

    Compared in constant time: digests of equal length, every configured token
    checked whatever matched, so timing reveals neither a token nor which one.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    presented = hashlib.sha256(token.strip().encode()).digest()
    matched = False
    for candidate in settings.AGGREGATION_API_TOKENS:
        expected = hashlib.sha256(candidate.encode()).digest()
        matched |= hmac.compare_digest(presented, expected)
    if scheme.lower() != "bearer" or not token.strip() or not matched:
        raise ApiError(
            "a valid bearer token is required",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="aggregate"'},
        )
