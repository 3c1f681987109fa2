"""Reference endpoints: parse and validate, call one service, serialise."""

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from project.core.deadline import active_deadline
from project.core.status import Status
from project.http.decorators import json_get
from project.http.errors import ApiError
from project.http.params import int_param

from . import services


def _ms(request: HttpRequest) -> int:
    return int_param(request.GET, "ms", minimum=0, maximum=settings.DEMO_MAX_MS)


@json_get
def delay(request: HttpRequest) -> JsonResponse:
    """Sleep ``ms`` milliseconds cooperatively, or 504 at the request's deadline."""
    ms = _ms(request)
    deadline = active_deadline()
    services.sleep_for(ms=ms, deadline=deadline)
    return JsonResponse({"slept_ms": ms})


@json_get
def slow_sql(request: HttpRequest) -> JsonResponse:
    """One query that sleeps ``ms`` in PostgreSQL and squares ``x`` there."""
    x = int_param(
        request.GET, "x", minimum=-settings.DEMO_MAX_X, maximum=settings.DEMO_MAX_X
    )
    ms = _ms(request)
    deadline = active_deadline()
    square = services.run_slow_query(x=x, ms=ms, deadline=deadline)
    return JsonResponse({"x": x, "square": square, "slept_ms": ms})


@json_get
def fan_out(request: HttpRequest) -> JsonResponse:
    """``http`` upstream calls and ``sql`` queries of ``ms`` each, concurrently."""
    limit = settings.DEMO_MAX_LEGS
    http = int_param(request.GET, "http", minimum=0, maximum=limit, default=0)
    sql = int_param(request.GET, "sql", minimum=0, maximum=limit, default=0)
    ms = _ms(request)
    if http + sql > limit:
        raise ApiError(
            f"http + sql must be at most {limit}", param="http+sql", value=http + sql
        )
    if http + sql == 0:
        raise ApiError(
            "ask for at least one leg (http or sql)", param="http+sql", value=0
        )
    deadline = active_deadline()
    results = services.fan_out_probe(http=http, sql=sql, ms=ms, deadline=deadline)
    return JsonResponse(
        {
            "legs": [result.as_dict() for result in results],
            "ok": sum(result.status == Status.OK for result in results),
            "elapsed_ms": round(deadline.elapsed_ms(), 1),
            "deadline_ms": round(deadline.budget * 1000),
        }
    )
