"""The reusable concurrency toolkit: deadlines, fan-out, HTTP client, SQL helpers.

Nothing here imports a view, an app's models or a settings module; it reads
``django.conf.settings`` lazily, at call time.
"""
