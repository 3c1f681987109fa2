"""The baseline's one endpoint: ``/demo/fan-out/?http=H&ms=D`` on asyncio + aiohttp.

The recipe a careful asyncio engineer would write: one ``aiohttp.ClientSession``
per worker process (keep-alive, no connection limit, so nothing queues in the
client), ``asyncio.gather`` over the legs, one ``asyncio.timeout`` for the whole
fan-out. Parameters are validated by the project's own ``int_param``.
"""

import asyncio
import time
from typing import Any

import aiohttp
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

from project.http.errors import ApiError
from project.http.params import int_param

_session: aiohttp.ClientSession | None = None


def _client() -> aiohttp.ClientSession:
    # Made on first use, inside the worker's running loop (uvicorn: one per process).
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            skip_auto_headers=("User-Agent",),
        )
    return _session


async def _leg(url: str, ms: int) -> dict[str, Any]:
    leg: dict[str, Any] = {"name": "http", "status": "error"}
    started = time.perf_counter()
    try:
        async with _client().get(url, params={"ms": ms}) as response:
            await response.read()
    except (aiohttp.ClientError, OSError) as exc:
        return {**leg, "error": type(exc).__name__}
    leg["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if response.status >= 400:
        return {**leg, "error": f"upstream answered {response.status}"}
    return {**leg, "status": "ok", "value": {"http_status": response.status}}


async def fan_out(request: HttpRequest) -> JsonResponse:
    """``http`` calls of ``ms`` each to the stub upstream, concurrently."""
    started = time.perf_counter()
    try:
        http = int_param(request.GET, "http", minimum=1, maximum=settings.DEMO_MAX_LEGS)
        ms = int_param(request.GET, "ms", minimum=0, maximum=settings.DEMO_MAX_MS)
    except ApiError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    url = f"{settings.DEMO_UPSTREAM_URL}/delay"
    try:
        async with asyncio.timeout(settings.REQUEST_DEADLINE_S):
            legs = await asyncio.gather(*(_leg(url, ms) for _ in range(http)))
    except TimeoutError:
        return JsonResponse({"error": "fan-out outlasted the deadline"}, status=504)
    return JsonResponse(
        {
            "legs": legs,
            "ok": sum(leg["status"] == "ok" for leg in legs),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            "deadline_ms": round(settings.REQUEST_DEADLINE_S * 1000),
        }
    )


urlpatterns = [path("demo/fan-out/", fan_out)]
