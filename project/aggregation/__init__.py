"""The internal aggregation API: ``GET /api/aggregate/<name>/``.

The registry file (``registry``, keys in ``schema``) declares upstreams,
queries and aggregations; the engine (``engine``, with ``sources``,
``cache``, ``policy``) runs them on the toolkit in ``project.core``.
"""
