#!/usr/bin/env python
"""Django's command-line utility; patches gevent before anything else is imported."""

from project import green  # isort: skip  (must run before Django is imported)

green.patch()

import sys  # noqa: E402


def main() -> None:
    """Select settings, start the embedded PostgreSQL if used, run the command."""
    import settings

    settings.select()
    from django.core.management import execute_from_command_line

    settings.ensure_embedded_database()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
