"""Who may read ``/metrics``: a bearer token or a client address."""

from ipaddress import ip_address

from django.conf import settings
from django.http import HttpRequest

from project.http.auth import bearer_token, token_matches
from project.http.errors import ApiError


def address_allowed(remote_addr: str) -> bool:
    """Whether ``remote_addr`` is in one of ``METRICS_ALLOW_IPS``.

    Only ``REMOTE_ADDR``, the peer of the socket: a forwarded header is
    whatever the client wrote.
    """
    try:
        address = ip_address(remote_addr)
    except ValueError:  # a unix socket, or nothing
        return False
    return any(address in network for network in settings.METRICS_ALLOW_IPS)


def check_scraper(request: HttpRequest) -> None:
    """Raise unless the request may read the metrics.

    Nothing configured (production's default): 404, as if there were no
    endpoint. A wrong or missing token when tokens are configured: 401;
    otherwise an address not allowed: 403.
    """
    tokens = settings.METRICS_TOKENS
    if not tokens and not settings.METRICS_ALLOW_IPS:
        raise ApiError("not found", status=404, path=request.path)
    if tokens and token_matches(bearer_token(request), tokens):
        return
    if address_allowed(request.META.get("REMOTE_ADDR", "")):
        return
    if tokens:
        raise ApiError(
            "a valid bearer token is required",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    raise ApiError("this address may not read the metrics", status=403)
