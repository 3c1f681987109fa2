"""Bearer-token authentication for the aggregation API."""

from django.conf import settings
from django.http import HttpRequest

from project.http.auth import bearer_token, token_matches
from project.http.errors import ApiError


def check_bearer_token(request: HttpRequest) -> str:
    """The request's token; a 401 unless it is one of ``AGGREGATION_API_TOKENS``
    (compared in constant time: ``project.http.auth.token_matches``)."""
    token = bearer_token(request)
    if token is None or not token_matches(token, settings.AGGREGATION_API_TOKENS):
        raise ApiError(
            "a valid bearer token is required",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="aggregate"'},
        )
    return token
