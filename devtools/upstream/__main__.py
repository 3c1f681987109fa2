"""``python -m devtools.upstream``: patch gevent, then serve the stub upstream."""

from gevent import monkey

# Patch before anything else is imported, and only when run as a program: an
# importer of the package decides for itself, and patching twice only warns.
if not monkey.is_module_patched("socket"):
    monkey.patch_all()

import sys  # noqa: E402

from devtools.upstream.server import main  # noqa: E402

sys.exit(main())
