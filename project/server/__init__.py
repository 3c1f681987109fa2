"""The server edge: the gunicorn worker, admission control, the access log and
log format. Built on ``project.core``; nothing in ``core`` imports it."""
