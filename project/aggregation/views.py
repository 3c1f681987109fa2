"""``GET /api/aggregate/<name>/``: authenticate, validate, run, serialise."""

from django.http import HttpRequest, JsonResponse

from project.core.caller import caller_or_anonymous, caller_scope, token_client
from project.core.deadline import active_deadline, deadline_scope
from project.core.disconnect import client_disconnect
from project.core.request_context import SOURCES_KEY
from project.http.decorators import json_get
from project.http.encoding import FiniteJSONEncoder
from project.http.errors import ApiError

from .auth import check_bearer_token
from .services import get_aggregator


@json_get
def aggregate(request: HttpRequest, name: str) -> JsonResponse:
    """Fetch the sources of aggregation ``name`` concurrently; see README."""
    token = check_bearer_token(request)
    aggregator = get_aggregator()
    aggregation = aggregator.registry.aggregations.get(name)
    if aggregation is None:
        raise ApiError(f"unknown aggregation {name!r}", status=404, aggregation=name)
    values = aggregation.parse_params(dict(request.GET.lists()))
    # The request's deadline, narrowed to the aggregation's own: its default
    # when the client asked for none, its maximum when it did.
    deadline = active_deadline()
    deadline = deadline.narrowed(
        aggregation.max_deadline_ms if deadline.requested else aggregation.deadline_ms
    )
    # One token is one client however many addresses it comes from: upstream
    # bulkheads and breakers share out by it.
    with (
        deadline_scope(deadline),
        caller_scope(
            client=token_client(token),
            traffic_class=caller_or_anonymous().traffic_class,
        ),
        client_disconnect(
            request.META.get("gunicorn.socket"),
            interim_allowed=request.META.get("SERVER_PROTOCOL") == "HTTP/1.1",
        ) as gone,
    ):
        result = aggregator.run(aggregation, values, deadline, cancel=gone)
    # For the access log: what became of each source, in one field.
    request.META[SOURCES_KEY] = {
        source: meta["status"] for source, meta in result.body["sources"].items()
    }
    return JsonResponse(
        result.body,
        status=result.status,
        headers=result.headers,
        encoder=FiniteJSONEncoder,
    )
