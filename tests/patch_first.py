"""pytest plugin loaded with ``-p`` so gevent patches before Django is imported.

pytest-django sets Django up before any conftest is read; patching in a
conftest would leave Django's connection handler with a real thread local,
shared by every greenlet the tests spawn. The file-descriptor soft limit is
raised here too, as gunicorn.conf.py does for the service, so the settings
the tests load get the same defaults (HTTP_POOL_MAXSIZE depends on it).
"""

from project import green
from project.core.fd_budget import raise_soft_limit

green.patch()
raise_soft_limit()
