"""Helpers shared by the load-test commands.

``processes`` starts and stops what a run needs on loopback (stub upstream,
gunicorn, the database), ``locust_run`` drives Locust as its own process and
reads what it wrote, ``window`` turns stats snapshots into steady-state figures.
None of these import locust; ``plugin`` does and is imported only by locustfiles.
"""
