"""Outbound HTTP for fan-out legs: geventhttpclient pools, one per upstream per worker.

Why not a ``requests.Session``: in a py-spy profile of workload W1 (ten 50 ms
upstream calls per request) ``requests`` and the urllib3 under it were 57% of
a worker's CPU. Per call, measured in one process against the stub upstream:
``requests`` ~300 us, urllib3 directly ~130 us, geventhttpclient ~60 us (its
response parser is C, its sockets gevent's own).

A leg can be interrupted (deadline ``gevent.Timeout``, kill) only where it
yields to the hub: connecting (the pool releases its slot), reading the answer
(the half-read response closes its socket when dropped, or in ``release()``).
Either way the connection is closed, never handed back half-read;
``tests/core/test_http_client.py`` checks both.

Pools are built lazily after gunicorn forks (a pool created in the master
would share sockets across workers). Upstream hosts come from configuration,
never from clients, so the number of pools stays small.
"""

import json
import os
import select
import socket
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent
from gevent import monkey
from geventhttpclient import HTTPClient
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.header import Headers
from geventhttpclient.response import HTTPParseError

from .resilience.singleflight import SharedCallAbandoned, SingleFlight

# Per-read limit inside a call; the call's own gevent.Timeout is what bounds it.
_READ_TIMEOUT_S = 3600.0
# A zero-timeout poll never blocks, so the unpatched one is safe on the loop.
_original_poll = monkey.get_original("select", "poll")


class _PollLivenessCheck:
    """Checks an idle pooled socket with ``poll``, not ``select``.

    geventhttpclient's check uses ``select()``, which raises for descriptors
    above 1023 and so calls every such socket dead: a worker holding more than
    ~1000 connections closed and reopened them on every call (W1 at 100 users
    opened 3,573 upstream connections for 1,000 concurrent legs).
    """

    def _is_socket_alive(self, sock: Any) -> bool:
        if sock is None or sock.fileno() < 0:
            return False
        poller = _original_poll()
        poller.register(sock, select.POLLIN)
        # Readable while idle means a FIN or stray bytes: not reusable.
        return not poller.poll(0)


# Address lookups in flight in this process, one per pool.
_lookups = SingleFlight()


class _SharedLookup:
    """Resolves the upstream's host once per ``dns_ttl`` seconds for all its sockets.

    geventhttpclient looks the host up for every new connection, through
    gevent's resolver thread pool (10 threads). When a burst of legs opens
    connections at once (W1 ramping to 400 users: ~2,000 per worker), the
    lookups queue behind each other and the GIL: even "127.0.0.1" took up to
    13 s, and legs timed out at the 15 s deadline before connecting. One lookup
    shared by the burst, kept for ``dns_ttl``, costs one hop.
    """

    dns_ttl: float  # set by _Client from HTTP_DNS_TTL_S
    _addresses: tuple[float, list] | None = None

    def _resolve(self) -> list:
        cached = self._addresses
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        while True:
            try:
                addresses, _ = _lookups.do(
                    id(self), self._lookup, timeout=self.connection_timeout
                )
                return addresses
            except SharedCallAbandoned:
                # The caller doing the lookup was killed; someone must do it again.
                continue

    def _lookup(self) -> list:
        addresses = super()._resolve()
        self._addresses = (time.monotonic() + self.dns_ttl, addresses)
        return addresses


class _Pool(_PollLivenessCheck, _SharedLookup, ConnectionPool):
    pass


class _TLSPool(_PollLivenessCheck, _SharedLookup, SSLConnectionPool):
    pass


class _Client(HTTPClient):
    """geventhttpclient's ``HTTPClient`` adjusted for fan-out legs.

    The adjustments reach into the pool it builds (geventhttpclient 2.6,
    pinned; ``tests/core/test_http_client.py`` checks each behaviour).
    """

    def __init__(self, *args: Any, dns_ttl: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool = self._connection_pool
        pool.__class__ = _TLSPool if self.ssl else _Pool
        pool.dns_ttl = dns_ttl
        # A GET whose connection closes before any answer is retried up to
        # pool-size + 1 times: against an upstream that resets every
        # connection, thousands of requests a second. The pool checks a
        # connection before reuse, so one retry covers the stale keep-alive
        # race; more is the caller's decision (retry budgets). `size` sets
        # only that count once the pool exists.
        pool.size = 0


class UpstreamBodyTooLarge(ConnectionError):
    """The upstream's answer is larger than the caller accepts."""


class _TotalTimeout(Exception):
    """Raised by the call's own ``gevent.Timeout``; never escapes ``http_get``."""


class Response:
    """An upstream's answer, read in full; the attribute names follow ``requests``."""

    __slots__ = ("status_code", "content", "_header_items", "_headers")

    def __init__(
        self, status_code: int, header_items: list[tuple[str, str]], content: bytes
    ) -> None:
        self.status_code = status_code
        self.content = content
        self._header_items = header_items
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """Case-insensitive response headers (built on first use)."""
        if self._headers is None:
            self._headers = Headers(self._header_items)
        return self._headers

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not JSON)."""
        return json.loads(self.content)


_pools: dict[str, Any] = {"pid": None, "by_origin": {}}


def get_pool(scheme: str, host: str, port: int | None) -> HTTPClient:
    """Return this process's client (a connection pool) for one upstream origin."""
    if _pools["pid"] != os.getpid():
        _pools.update(pid=os.getpid(), by_origin={})
    key = (scheme, host, port)
    pool = _pools["by_origin"].get(key)
    if pool is None:
        from django.conf import settings

        pool = _Client(
            host,
            port,
            ssl=scheme == "https",
            concurrency=settings.HTTP_POOL_MAXSIZE,
            connection_timeout=settings.HTTP_CONNECT_TIMEOUT_S,
            network_timeout=_READ_TIMEOUT_S,
            dns_ttl=settings.HTTP_DNS_TTL_S,
        )
        _pools["by_origin"][key] = pool
    return pool


def http_get(
    url: str,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    max_body_bytes: int | None = None,
) -> Response:
    """GET ``url`` (plus ``params``) and read the whole answer within ``timeout`` s.

    ``timeout`` bounds the whole call, connect and body included: a per-read
    timeout alone would let a body that trickles in forever hold the leg.
    Redirects are not followed. Timeouts surface as ``TimeoutError`` and
    failures to connect or broken connections as ``ConnectionError``, with
    messages that do not reveal the upstream's address to our clients. A body
    over ``max_body_bytes`` (default ``HTTP_MAX_BODY_BYTES``) raises
    ``UpstreamBodyTooLarge`` after reading at most one byte more than the limit.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("upstream URL must be absolute http(s)")
    query = parts.query
    if params:
        query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    target = f"{parts.path or '/'}?{query}" if query else parts.path or "/"
    pool = get_pool(parts.scheme, parts.hostname, parts.port)
    if max_body_bytes is None:
        from django.conf import settings

        max_body_bytes = settings.HTTP_MAX_BODY_BYTES
    try:
        with gevent.Timeout(timeout, _TotalTimeout):
            answer = pool.get(target, headers)
            try:
                declared = answer.content_length
                oversized = declared is not None and declared > max_body_bytes
                content = b"" if oversized else answer.read(max_body_bytes + 1)
            finally:
                # Closes rather than pools a connection whose body is unread.
                answer.release()
    except _TotalTimeout as exc:
        raise TimeoutError(
            f"upstream answer not complete within {timeout * 1000:.0f} ms"
        ) from exc
    except TimeoutError as exc:
        # The pool's connect timeout (socket.timeout is TimeoutError).
        raise TimeoutError("could not connect to upstream in time") from exc
    except (ConnectionRefusedError, socket.gaierror) as exc:
        raise ConnectionError("could not connect to upstream") from exc
    except (OSError, HTTPParseError) as exc:
        raise ConnectionError("upstream connection failed") from exc
    if oversized or len(content) > max_body_bytes:
        raise UpstreamBodyTooLarge(f"upstream body larger than {max_body_bytes} bytes")
    return Response(answer.status_code, answer.headers, content)
