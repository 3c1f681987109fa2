"""The internal aggregation API: ``GET /api/aggregate/<name>/`` (engine in core)."""
