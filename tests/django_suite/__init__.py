"""Django's own database-backend tests, run against our backend and the stock one.

Nothing here is a pytest test: ``make test-django-suite`` runs ``run.py``.
"""
