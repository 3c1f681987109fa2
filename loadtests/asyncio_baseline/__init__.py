"""The asyncio baseline for W1: a Django async view fanning out with aiohttp.

``make bench-fanout`` serves it with uvicorn (uvloop, httptools) next to the
project's gevent workers, in the same rounds, so "gevent beats asyncio on its own
workload" is a same-run ratio, not a figure from another day. It answers
``/demo/fan-out/?http=H&ms=D`` like the project (same JSON shape, so the same
Locust check), with Django's async-capable middleware; it is a benchmark
fixture, not part of the service.
"""
