"""WSGI entry point of the psycopg 3 rival: what gunicorn's gevent worker serves.

gevent patches first: psycopg 3 (3.1.14+) waits on its sockets through the
patched ``select`` and psycopg_pool's workers are patched threads, so neither
needs psycogreen, but only when everything is patched before they load.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402 (after patching, as gevent requires)

from django.core.wsgi import get_wsgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadtests.pg3pool.settings")

application = get_wsgi_application()
