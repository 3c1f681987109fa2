"""The smallest endpoint to copy: one HTTP call and one query, concurrently.

docs/add-an-endpoint.md walks through it. Mounted with the demo
endpoints (``DEMO_ENDPOINTS``), at ``/example/product/?sku=N``.
"""
