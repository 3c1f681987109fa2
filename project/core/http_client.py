"""Outbound HTTP for fan-out legs: geventhttpclient pools, one per upstream per worker.

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
``tests/core/test_http_hostile.py`` check both.

Pools are built lazily after gunicorn forks (a pool created in the master
would share sockets across workers). Upstream hosts come from configuration,
never from clients, so the number of pools stays small.
"""

import errno
import json
import select
import socket
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent
from django.conf import settings
from gevent import monkey
from geventhttpclient import HTTPClient
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.header import Headers
from geventhttpclient.response import HTTPParseError

from . import fd_budget
from .http_wire import (
    HeaderLimits,
    LimitedResponse,
    NoAnswer,
    UpstreamProtocolError,
)
from .per_process import PerProcess
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


class _IdleLimit:
    """Closes pooled sockets idle longer than ``idle_s``; says which are reused.

    geventhttpclient keeps an idle socket until it is used again, so one burst
    left its sockets (and the upstream's) open for good. Sockets returned to
    the pool are stamped; a sweep on a loop timer closes the stale ones, and
    ``checkout`` never hands one out.
    """

    idle_s: float  # set by get_pool from HTTP_POOL_IDLE_S
    _returned: dict | None = None
    _sweeper: Any = None

    def checkout(self) -> tuple[Any, bool]:
        """A socket (waiting for a free slot) and whether it was used before."""
        self._semaphore.acquire()
        try:
            now = time.monotonic()
            while not self._socket_queue.empty():
                sock = self._socket_queue.get(block=False)
                returned = self._returned.pop(sock, 0.0)
                if now - returned < self.idle_s and self._is_socket_alive(sock):
                    return sock, True
                _close_quietly(sock)
            return self._create_socket(), False
        except BaseException:
            self._semaphore.release()
            raise

    def return_socket(self, sock: Any) -> None:
        """Pool ``sock`` again, stamped with the time it went idle."""
        if self._returned is None:
            self._returned = {}
        if self._sweeper is None and not self._closed:
            # ref=False: an idle pool must not keep the loop (or a test) alive.
            self._sweeper = gevent.get_hub().loop.timer(
                self.idle_s, self.idle_s, ref=False
            )
            self._sweeper.start(self.sweep)
        self._returned[sock] = time.monotonic()
        super().return_socket(sock)

    def sweep(self) -> int:
        """Close the pooled sockets idle for ``idle_s`` or more; return how many."""
        now = time.monotonic()
        keep, closed = [], 0
        while not self._socket_queue.empty():
            sock = self._socket_queue.get(block=False)
            if now - self._returned.get(sock, 0.0) < self.idle_s:
                keep.append(sock)
            else:
                self._returned.pop(sock, None)
                _close_quietly(sock)
                closed += 1
        for sock in reversed(keep):  # LIFO order: the most recently used on top
            self._socket_queue.put(sock)
        return closed

    def idle_count(self) -> int:
        """Sockets waiting in the pool."""
        return self._socket_queue.qsize()


def _close_quietly(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass


class _Pool(_IdleLimit, _PollLivenessCheck, _SharedLookup, ConnectionPool):
    pass


class _TLSPool(_IdleLimit, _PollLivenessCheck, _SharedLookup, SSLConnectionPool):
    pass


class _Client(HTTPClient):
    """geventhttpclient's ``HTTPClient``, used for its pool and request builder.

    The adjustments reach into the pool it builds (geventhttpclient 2.6,
    pinned; ``tests/core/test_http_client.py`` checks each behaviour).
    """

    # identity only: a compressed body would be a bomb we must first defuse.
    DEFAULT_HEADERS = Headers(
        {"User-Agent": "gevent-django", "Accept-Encoding": "identity"}
    )

    def __init__(
        self, *args: Any, dns_ttl: float, idle_s: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        pool = self._connection_pool
        pool.__class__ = _TLSPool if self.ssl else _Pool
        pool.dns_ttl = dns_ttl
        pool.idle_s = idle_s
        pool._returned = {}


class _TotalTimeout(Exception):
    """Raised by the call's own ``gevent.Timeout``; never escapes ``http_get``."""


class UpstreamInvalidJSON(ValueError):
    """The body is not strict JSON (or nests deeper than allowed)."""


# Deeper than any sane payload, far below the interpreter's recursion limit
# (which our own response rendering must stay under).
MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise UpstreamInvalidJSON(f"invalid JSON: {name} is not JSON")


def parse_json(content: bytes) -> Any:
    """Strict JSON: no ``NaN``/``Infinity``, at most ``MAX_JSON_DEPTH`` levels."""
    try:
        value = json.loads(content, parse_constant=_reject_constant)
    except UpstreamInvalidJSON:
        raise
    except RecursionError as exc:
        raise UpstreamInvalidJSON("invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise UpstreamInvalidJSON(f"invalid JSON: {exc}") from exc
    # Fewer brackets than the limit cannot nest deeper: skip the walk.
    if content.count(b"[") + content.count(b"{") > MAX_JSON_DEPTH:
        _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise UpstreamInvalidJSON(
                f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list)
        )


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
        """The body as strict JSON (``UpstreamInvalidJSON`` when it is not)."""
        return parse_json(self.content)


_pools: PerProcess[dict[tuple, HTTPClient]] = PerProcess(dict)


def get_pool(scheme: str, host: str, port: int | None) -> HTTPClient:
    """Return this process's client (a connection pool) for one upstream origin."""
    by_origin = _pools.get()
    key = (scheme, host, port)
    pool = by_origin.get(key)
    if pool is None:
        pool = _Client(
            host,
            port,
            ssl=scheme == "https",
            concurrency=settings.HTTP_POOL_MAXSIZE,
            connection_timeout=settings.HTTP_CONNECT_TIMEOUT_S,
            network_timeout=_READ_TIMEOUT_S,
            dns_ttl=settings.HTTP_DNS_TTL_S,
            idle_s=settings.HTTP_POOL_IDLE_S,
        )
        by_origin[key] = pool
        fd_budget.check(upstreams=len(by_origin))
    return pool


def open_sockets() -> dict[str, int]:
    """Idle pooled sockets per upstream origin in this process."""
    return {
        f"{scheme}://{host}:{port}": client._connection_pool.idle_count()
        for (scheme, host, port), client in (_pools.peek() or {}).items()
    }


_limits_cache: list = [None, None]  # [settings values, HeaderLimits]


def _limits() -> HeaderLimits:
    """The header limits from settings, rebuilt only when they change."""
    values = (
        settings.HTTP_MAX_HEADER_BYTES,
        settings.HTTP_MAX_HEADERS,
        settings.HTTP_MAX_STATUS_LINE_BYTES,
        settings.HTTP_MAX_INTERIM_RESPONSES,
    )
    if _limits_cache[0] != values:
        _limits_cache[:] = [values, HeaderLimits(*values)]
    return _limits_cache[1]


def _exchange(client: _Client, request: bytes, limits: HeaderLimits) -> LimitedResponse:
    """Send ``request``; return the answer with its headers read.

    A kept-alive socket that turns out closed (or holding stray bytes) before
    any answer is retried once on a fresh connection: the upstream may close
    an idle connection just as we reuse it, and the request is an idempotent
    GET. A fresh connection failing the same way is the upstream's answer.
    """
    pool = client._connection_pool
    while True:
        sock, reused = pool.checkout()
        try:
            sock.sendall(request)
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


def http_get(
    url: str,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    max_body_bytes: int | None = None,
) -> Response:
    """GET ``url`` (plus ``params``) and read the whole answer within ``timeout`` s.

    ``timeout`` bounds the whole call, connect, headers and body: a per-read
    timeout alone would let an answer that trickles in forever hold the leg,
    and every read yields to the loop so the timeout can fire. Redirects are
    not followed. Timeouts surface as ``TimeoutError``; failures to connect,
    broken connections and answers that break HTTP or our limits as
    ``ConnectionError`` (``UpstreamHeadersTooLarge``, ``UpstreamBodyTooLarge``
    past ``max_body_bytes``, default ``HTTP_MAX_BODY_BYTES``; an encoded body,
    since we ask for identity only), with messages that do not reveal the
    upstream's address to our clients. The connection goes back to the pool
    only when the answer was read to its end and nothing else came with it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("upstream URL must be absolute http(s)")
    query = parts.query
    if params:
        query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    target = f"{parts.path or '/'}?{query}" if query else parts.path or "/"
    client = get_pool(parts.scheme, parts.hostname, parts.port)
    if max_body_bytes is None:
        max_body_bytes = settings.HTTP_MAX_BODY_BYTES
    request = client._build_request("GET", target, headers=headers, chunked=False)
    try:
        with gevent.Timeout(timeout, _TotalTimeout):
            answer = _exchange(client, request.encode("latin-1"), _limits())
            try:
                encoding = answer.get("content-encoding", "identity")
                if encoding != "identity":
                    raise UpstreamProtocolError(
                        f"upstream sent a {encoding!r}-encoded body "
                        "(only identity is accepted)"
                    )
                content = answer.read_body(max_body_bytes)
            finally:
                # Pools the socket only if the answer was read cleanly to its end.
                answer.release()
    except _TotalTimeout as exc:
        raise TimeoutError(
            f"upstream answer not complete within {timeout * 1000:.0f} ms"
        ) from exc
    except TimeoutError as exc:
        # The pool's connect timeout (socket.timeout is TimeoutError).
        raise TimeoutError("could not connect to upstream in time") from exc
    except UpstreamProtocolError:
        raise
    except (ConnectionRefusedError, socket.gaierror) as exc:
        raise ConnectionError("could not connect to upstream") from exc
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise LocalSocketsExhausted(
                "no socket free in this worker (too many open files)"
            ) from exc
        raise ConnectionError("upstream connection failed") from exc
    except HTTPParseError as exc:
        # Closed mid-answer or not HTTP at all: possibly transient, so a plain
        # ConnectionError (retried where retries are allowed).
        raise ConnectionError(
            "upstream connection failed (answer incomplete or not HTTP)"
        ) from exc
    return Response(answer.status_code, list(answer.items()), content)


class LocalSocketsExhausted(ConnectionError):
    """This worker is out of file descriptors; shed the call, do not blame upstream."""
