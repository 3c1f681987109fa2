"""The rival's one endpoint: ``/demo/slow-sql/?x=X&ms=MS``, as the service answers it.

The same query (the service's ``SLOW_SQL``), the same JSON (``{"x", "square",
"slept_ms"}``, a 400 ``{"error", "param", ...}`` naming a bad parameter), with
the service's own strict parser (``project.http.params``, which needs Django
only). No connection from the pool within its timeout is a JSON 504, as the
service answers a wait that outlasts the request's deadline.
"""

from django.conf import settings
from django.db import OperationalError, connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from psycopg_pool import PoolTimeout

from project.http.errors import ApiError
from project.http.params import int_param

# project/demo/services.py's SLOW_SQL (a test keeps them equal): that module
# imports the service's pool, which needs psycopg2.
SLOW_SQL = "SELECT pg_sleep(%s / 1000.0), %s::bigint * %s::bigint"


def slow_sql(request: HttpRequest) -> JsonResponse:
    """One query that sleeps ``ms`` in PostgreSQL and squares ``x`` there."""
    try:
        x = int_param(
            request.GET, "x", minimum=-settings.DEMO_MAX_X, maximum=settings.DEMO_MAX_X
        )
        ms = int_param(request.GET, "ms", minimum=0, maximum=settings.DEMO_MAX_MS)
    except ApiError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    try:
        with connection.cursor() as cursor:
            cursor.execute(SLOW_SQL, [ms, x, x])
            square = cursor.fetchone()[1]
    except OperationalError as exc:
        if not isinstance(exc.__cause__, PoolTimeout):
            raise
        return JsonResponse(
            {"error": "no database connection within the pool's timeout"}, status=504
        )
    return JsonResponse({"x": x, "square": square, "slept_ms": ms})


urlpatterns = [path("demo/slow-sql/", slow_sql)]
