"""Liveness (no IO) and readiness (database within 1 s)."""

from django.http import HttpRequest, JsonResponse

from project.api import json_get

from .services import check_database


@json_get
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the worker's event loop is answering."""
    return JsonResponse({"status": "ok"})


@json_get
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database answers ``SELECT 1`` within 1 s, else 503."""
    problem = check_database()
    if problem:
        return JsonResponse({"status": "unavailable", "reason": problem}, status=503)
    return JsonResponse({"status": "ok"})
