"""Liveness (no IO) and readiness (database within 1 s)."""

from django.http import HttpRequest, JsonResponse

from project.http.decorators import json_get
from project.server.admission import runtime as admission

from .services import check_database


@json_get
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the worker's event loop is answering."""
    return JsonResponse({"status": "ok"})


@json_get
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database answers ``SELECT 1`` within 1 s (or every
    pooled connection is busy: ``"database": "busy"``), else 503 naming the
    dependency, never its address; 503 ``"overloaded"`` while this worker is
    refusing requests, so a balancer steers new ones elsewhere."""
    gate = admission.current()
    if gate is not None and gate.gate.shedding():
        return JsonResponse(
            {"status": "overloaded", "reason": "refusing requests over its limit"},
            status=503,
        )
    ready, state = check_database()
    if not ready:
        return JsonResponse({"status": "unavailable", "reason": state}, status=503)
    return JsonResponse({"status": "ok", "database": state})
