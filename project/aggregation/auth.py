"""Bearer-token authentication for the aggregation API."""

from django.conf import settings
from django.http import HttpRequest

from project.http.auth import bearer_token, token_matches
from project.http.errors import ApiError


def check_bearer_token(request: HttpRequest) -> None:
    """Raise a 401 unless the request carries one of ``AGGREGATION_API_TOKENS``
    (compared in constant time: ``project.http.auth.token_matches``)."""
    if not token_matches(bearer_token(request), settings.AGGREGATION_API_TOKENS):
        raise ApiError(
            "a valid bearer token is required",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="aggregate"'},
        )
