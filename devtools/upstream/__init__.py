"""Stub upstream: a tiny gevent WSGI server the service fans out to in load tests.

Run it as ``python -m devtools.upstream --port P [--host 127.0.0.1] [--backlog N]``
(``__main__`` patches gevent first, then runs ``server.main``).
It is deliberately not Django and logs nothing per request by default, so it is
never the bottleneck of a benchmark.

Endpoints (GET; bad parameters give 400 ``{"error": ..., "param": ...}``):

* ``/delay?ms=D``: 200 with a 100-byte JSON body after D ms.
* ``/status?code=C&ms=D``: status C (100..599) with ``{"status": C}`` after D ms.
* ``/reset?ms=D``: after D ms the connection is reset (TCP RST), no response.
* ``/trickle?chunks=N&interval_ms=I[&chunked=1]``: 200 with N 10-byte chunks, I ms
  apart; with ``chunked=1`` no Content-Length (chunked transfer encoding).
* ``/headers``: 200 with the request's headers as JSON (lowercase names), so
  tests can check what a client sent (deadlines, auth).
* ``/hostile?mode=M``: a misbehaving upstream, for tests and load runs that aim
  at one. Raw modes write straight to the socket and never finish a response:
  ``header_line`` (one header line that never ends), ``headers`` (new headers
  forever), ``interim`` (``100 Continue`` forever), ``status_line`` (a status
  line that never ends); they stop when the client goes or after
  ``HOSTILE_MAX_BYTES``. Answer modes give a complete 200 that is wrong in one
  way: ``close`` (a valid answer with ``Connection: close``), ``stray`` (a
  valid answer, then ``ms`` later, default 300, stray bytes on the kept-alive
  connection), ``gzip`` (a gzip body with ``Content-Encoding``),
  ``gzip_bomb`` (100 MB of zeros in ~100 KB of gzip), ``json_invalid``,
  ``json_nan`` (``NaN``/``Infinity``), ``json_deep`` (100,000 nested arrays).
* ``/stats``: ``{"requests": {path: count}, "connections": N}`` since start or
  the last reset; N counts distinct client addresses (host, port), that is the
  connections clients opened, so tests can see whether keep-alive reuses them.
* ``/stats/request-ids``: ``{"request_ids": [...]}``, the ``X-Request-ID`` values
  of the latest 1,000 requests that sent one, oldest first, so tests can
  follow a request of the service to its upstream calls.
* ``/stats/reset`` (GET or POST): zeroes those counts and forgets those ids.

``ms``, ``interval_ms`` default to 0 and are capped at 60000; ``chunks`` defaults
to 10 and is capped at 10000; ``code`` is required.

``app`` routes the requests, ``hostile`` holds the misbehaving modes, ``responses``
the replies and exceptions they share, ``server`` the pywsgi server and its handler.

How ``/reset`` resets: the app raises ``AbortConnection``; our pywsgi handler
subclass catches it before pywsgi can turn it into a 500, sets ``SO_LINGER`` to
``(on, 0 s)`` on the client socket and marks the connection for closing.  When
pywsgi then closes the socket, a zero linger makes the kernel drop it and send
RST instead of FIN, so the client sees ``ECONNRESET`` rather than a clean EOF.
This needs our handler; under another WSGI server ``/reset`` would give a 500.
"""
