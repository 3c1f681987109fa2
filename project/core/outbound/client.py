"""Outbound HTTP for fan-out legs: ``http_get`` over per-worker upstream pools.

Why not a ``requests.Session``: in a py-spy profile of workload W1 (ten 50 ms
upstream calls per request) ``requests`` and the urllib3 under it were 57% of
a worker's CPU. Per call, measured in one process against the stub upstream:
``requests`` ~300 us, urllib3 directly ~130 us, geventhttpclient ~60 us (its
response parser is C, its sockets gevent's own).

Answers are read by ``http_wire.LimitedResponse``: header limits, a yield to
the loop on every read after the first (so the call's ``gevent.Timeout`` can
fire in any phase), and the socket back in the pool only after a clean,
complete answer. A call cut anywhere closes its connection, never hands it
back half-read; ``tests/core/test_http_client.py`` and
``tests/core/test_http_hostile.py`` check both. The pools are in
``http_pool``, the answer type and its strict JSON in ``http_response``.
"""

import errno
import functools
import socket
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent
from geventhttpclient.response import HTTPParseError

from .. import loop_turns
from ..request_context import current_request_id
from ..socket_send import send_whole
from ..status import Status
from ..upstream_metrics import upstream_meter
from .pool import Client, get_pool
from .response import Response
from .wire import (
    HeaderLimits,
    LimitedResponse,
    NoAnswer,
    UpstreamProtocolError,
)

# What an upstream answer may send before its body (64 KiB of status line and
# headers, interim answers included; 100 header lines; an 8 KiB status line; 5
# interim 1xx answers): crossing a limit fails the call at once ("upstream
# headers too large") and closes the connection.
HEADER_LIMITS = HeaderLimits()
# An upstream answer is held in memory whole; a runaway body must not take the
# worker. A larger one fails that call ("upstream body larger than N bytes").
MAX_BODY_BYTES = 10 * 1024 * 1024


class LocalSocketsExhausted(ConnectionError):
    """This worker is out of file descriptors; shed the call, do not blame upstream."""


class _TotalTimeout(Exception):
    """Raised by the call's own ``gevent.Timeout``; never escapes ``http_get``."""


def http_get(
    url: str,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    max_body_bytes: int | None = None,
    upstream: str | None = None,
) -> Response:
    """GET ``url`` (plus ``params``) and read the whole answer within ``timeout`` s.

    ``timeout`` bounds the whole call, connect, headers and body: a per-read
    timeout alone would let an answer that trickles in forever hold the leg,
    and every read yields to the loop so the timeout can fire. Redirects are
    not followed. Timeouts surface as ``TimeoutError``; failures to connect,
    broken connections and answers that break HTTP or our limits as
    ``ConnectionError`` (``UpstreamHeadersTooLarge``, ``UpstreamBodyTooLarge``
    past ``max_body_bytes``, default ``MAX_BODY_BYTES``; an encoded body,
    since we ask for identity only), with messages that do not reveal the
    upstream's address to our clients. The connection goes back to the pool
    only when the answer was read to its end and nothing else came with it.

    The call is counted in ``gd_upstream_calls_total`` (a 3xx-5xx answer is
    an ``error``) and timed, labelled ``upstream`` (a configured upstream's
    name) or else the origin's ``host:port``.
    """
    scheme, host, port, target = _split(url, params)
    client = get_pool(scheme, host, port)
    if max_body_bytes is None:
        max_body_bytes = MAX_BODY_BYTES
    # X-Request-ID: the upstream's logs can be joined to ours.
    request = client.get_request(target, headers, current_request_id())
    meter = client.meter if upstream is None else upstream_meter(upstream)
    if meter is None:
        return _call(client, request, timeout, max_body_bytes)
    started = time.monotonic()
    try:
        response = _call(client, request, timeout, max_body_bytes)
    except BaseException as exc:
        meter.call(_outcome(exc), time.monotonic() - started)
        raise
    outcome = Status.OK if response.status_code < 300 else Status.ERROR
    meter.call(outcome, time.monotonic() - started)
    return response


def _call(
    client: Client, request: str, timeout: float, max_body_bytes: int
) -> Response:
    """Send ``request`` and read the whole answer within ``timeout`` s."""
    try:
        with gevent.Timeout(timeout, _TotalTimeout):
            answer = _exchange(client, request.encode("latin-1"), HEADER_LIMITS)
            # Its headers came in this turn's IO phase; the rest waits for the
            # loop's next poll while the worker sheds (loop_turns.py).
            loop_turns.yield_to_loop()
            content = _read_body(answer, max_body_bytes)
    except Exception as exc:
        error = _call_error(exc, timeout)
        if error is None:
            raise
        raise error from exc
    return Response(answer.status_code, list(answer.items()), content)


def _outcome(exc: BaseException) -> Status:
    """The outcome of a call that raised ``exc``.

    Not an ``Exception`` (an outer ``gevent.Timeout``, the leg killed at its
    deadline): cut short by time, so a timeout. Out of local sockets: shed,
    as ``call_upstream`` reports it.
    """
    if isinstance(exc, TimeoutError) or not isinstance(exc, Exception):
        return Status.TIMEOUT
    if isinstance(exc, LocalSocketsExhausted):
        return Status.SHED
    return Status.ERROR


def _split(url: str, params: dict[str, Any] | None) -> tuple[str, str, int | None, str]:
    """Scheme, host, port and request target of ``url`` plus ``params``."""
    if not params:
        return _split_url(url)
    scheme, host, port, target = _split_url(url)
    path, _, query = target.partition("?")  # a path holds no "?"
    query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    return scheme, host, port, f"{path}?{query}"


@functools.lru_cache(maxsize=1024)
def _split_url(url: str) -> tuple[str, str, int | None, str]:
    """``url`` split once: a fan-out calls the same few URLs thousands of times
    a second, and ``urlsplit`` was 1 % of a W1 worker's CPU."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("upstream URL must be absolute http(s)")
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    return parts.scheme, parts.hostname, parts.port, target


def _exchange(client: Client, request: bytes, limits: HeaderLimits) -> LimitedResponse:
    """Send ``request``; return the answer with its headers read.

    A kept-alive socket that turns out closed (or holding stray bytes) before
    any answer is retried once on a fresh connection: the upstream may close
    an idle connection just as we reuse it, and the request is an idempotent
    GET. A fresh connection failing the same way is the upstream's answer.
    """
    pool = client.pool
    while True:
        sock, reused = pool.checkout()
        try:
            send_whole(sock, request)
        except BaseException as exc:
            pool.release_socket(sock)
            if reused and isinstance(exc, BrokenPipeError | ConnectionResetError):
                continue
            raise
        try:
            # On any failure the response closes the socket and frees its slot.
            return LimitedResponse(sock, pool, limits)
        except NoAnswer:
            if not reused:
                raise


def _read_body(answer: LimitedResponse, max_body_bytes: int) -> bytes:
    """The identity-encoded body; the socket is pooled again only if read cleanly."""
    try:
        encoding = answer.content_encoding()
        if encoding != "identity":
            raise UpstreamProtocolError(
                f"upstream sent a {encoding!r}-encoded body (only identity is accepted)"
            )
        return answer.read_body(max_body_bytes)
    finally:
        answer.release()


def _call_error(exc: Exception, timeout: float) -> Exception | None:
    """What a call that raised ``exc`` raises instead: ``TimeoutError`` or a
    ``ConnectionError`` that does not name the upstream; None to raise ``exc``
    as it is. (A plain function, not a context manager: it runs only when a
    call fails, where a generator-based one cost every call 0.7 % of a W1
    worker.)"""
    if isinstance(exc, _TotalTimeout):
        return TimeoutError(
            f"upstream answer not complete within {timeout * 1000:.0f} ms"
        )
    if isinstance(exc, UpstreamProtocolError):
        return None
    if isinstance(exc, TimeoutError):
        # The pool's connect timeout (socket.timeout is TimeoutError).
        return TimeoutError("could not connect to upstream in time")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return ConnectionError("could not connect to upstream")
    if isinstance(exc, OSError):
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return LocalSocketsExhausted(
                "no socket free in this worker (too many open files)"
            )
        return ConnectionError("upstream connection failed")
    if isinstance(exc, HTTPParseError):
        # Closed mid-answer or not HTTP at all: possibly transient, so a plain
        # ConnectionError (retried where retries are allowed).
        return ConnectionError(
            "upstream connection failed (answer incomplete or not HTTP)"
        )
    return None
