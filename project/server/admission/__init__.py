"""Admission control: each worker refuses, in milliseconds, what it cannot serve.

``gate`` (the limit, the wait lines, the refusal reasons), ``limit`` (the
adaptive concurrency limit), ``loop_busy`` (the CPU signal), ``refusal`` (the
canned 503s) and ``runtime`` (one worker's gate, from settings, with its
metrics and logs); the priorities by path are ``project.core.route_priority``.
The gunicorn worker consults it after parsing a request and before the WSGI
application.
"""
