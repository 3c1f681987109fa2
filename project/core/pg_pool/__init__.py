"""A Django PostgreSQL backend (psycopg2) with a bounded, gevent-aware pool.

Use ``ENGINE = "project.core.pg_pool"``. See :mod:`.pool` for the pool itself.
"""
