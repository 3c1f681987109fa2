"""The smallest endpoint to copy: one HTTP call and one query, concurrently.

README.md "Add your own endpoint" walks through it. Mounted with the demo
endpoints (``DEMO_ENDPOINTS``), at ``/example/product/?sku=N``.
"""
