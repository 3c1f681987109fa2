"""What the tests, the load tests and ``deploy/`` share to run the service.

``ports`` (free ports, waiting for a port or an answer), ``processes`` (start
processes on loopback and stop exactly those), ``gunicorn`` (the one way any of
them starts the service), ``cli`` (``--env KEY=VALUE``) and ``upstream`` (the
stub upstream the service fans out to, ``python -m devtools.upstream``).

It never imports ``tests``, ``loadtests`` or ``deploy``: they are built on it;
and ``project``, the service, imports none of them.
"""
