"""The psycopg 3 rival of W2 (``python -m loadtests.bench --compare pg3pool``):
what a Django user would pick instead of this service's pool today, Django 5.2's
own ``OPTIONS["pool"]`` (psycopg 3 + psycopg_pool) under gunicorn's stock gevent
worker. It runs from its own venv (``requirements.txt`` here) and imports
nothing of the service but Django, so it never changes the service's driver."""
