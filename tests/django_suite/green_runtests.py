"""Run Django's ``tests/runtests.py`` in a gevent-patched process.

Usage: ``python -m tests.django_suite.green_runtests PATH/TO/runtests.py ARGS...``
(from the project root, so ``project`` imports). Patching comes first, before
Django or psycopg2 are imported, as in ``manage.py`` and ``wsgi.py``.
"""

from project import green  # isort: skip  (must run before Django is imported)

if not green.patch():
    raise SystemExit("gevent patching is off (GEVENT_PATCH=0); unset it to run")

import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    """Run the given runtests.py as ``__main__``, as if started by its path."""
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    # What `python runtests.py` would put first: the suite's own directory.
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
