"""WSGI entry point for gunicorn; patches gevent before anything else is imported."""

from project import green  # isort: skip  (must run before Django is imported)

green.patch()

import settings  # noqa: E402

settings.select()

from project.http.handler import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
