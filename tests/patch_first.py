"""pytest plugin loaded with ``-p`` so gevent patches before Django is imported.

pytest-django sets Django up before any conftest is read; patching in a
conftest would leave Django's connection handler with a real thread local,
shared by every greenlet the tests spawn.
"""

from project import green

green.patch()
