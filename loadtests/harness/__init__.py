"""The harness the load-test commands and locustfiles share.

Without locust: ``paths`` (where things are), ``processes`` (start and stop the
stub upstream, gunicorn and the database on loopback), ``locust_run`` (drive
Locust as its own process, read what it wrote), ``window`` (steady-state figures
from stats snapshots), ``guards`` (guards.toml and its checks), ``usl`` (the
Universal Scalability Law), ``checkout`` (a git revision in a temporary
worktree). With locust, imported only by locustfiles: ``plugin`` and what it
wires together, and ``step_shape``.
"""
