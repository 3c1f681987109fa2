"""The floor of W1 (``python -m loadtests.bench --compare floor``): a bare WSGI
fan-out under gunicorn's stock gevent worker, no Django, no middleware."""
