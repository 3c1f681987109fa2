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

from project.core.errors import ApiError
from project.core.params import int_param

_sessions: dict[int, aiohttp.ClientSession] = {}


def _session() -> aiohttp.ClientSession:
    # A session belongs to the loop it was made on; uvicorn runs one per worker.
    loop = asyncio.get_running_loop()
    session = _sessions.get(id(loop))
    if session is None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            skip_auto_headers=("User-Agent",),
        )
        _sessions[id(loop)] = session
    return session


async def _leg(url: str, ms: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with _session().get(url, params={"ms": ms}) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError) as exc:
        return {"name": "http", "status": "error", "error": type(exc).__name__}
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    if status >= 400:
        error = f"upstream answered {status}"
        return {
            "name": "http",
            "status": "error",
            "elapsed_ms": elapsed,
            "error": error,
        }
    return {
        "name": "http",
        "status": "ok",
        "elapsed_ms": elapsed,
        "value": {"http_status": status},
    }


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
