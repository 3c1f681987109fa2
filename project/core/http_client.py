"""Outbound HTTP for fan-out legs: urllib3 pools, one per upstream per worker.

Why urllib3 and not a ``requests.Session``: in a py-spy profile of workload W1
(ten 50 ms upstream calls per request) ``requests`` itself, on top of the
urllib3 it drives, was a quarter of a worker's CPU: merging session settings,
cookie jars, hooks and per-call URL preparation. The legs need none of it.
urllib3 also survives the way legs die: a ``gevent.Timeout`` or a kill inside
``urlopen`` closes the connection in its ``finally`` instead of returning a
half-read socket to the pool (``tests/core/test_http_client.py`` checks this).

The pools are built lazily after gunicorn forks (a pool created in the master
would share sockets across workers) and keep ``HTTP_POOL_MAXSIZE`` idle
connections per upstream: urllib3's default of 10 discards and reopens
connections as soon as a fan-out exceeds it. Upstream hosts come from
configuration, never from clients, so the number of pools stays small.
"""

import json
import os
import select
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent
import urllib3
from gevent import monkey
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

# A zero-timeout poll never blocks, so the original poll is safe on the event
# loop; gevent's patched one builds watchers and greenlets for each check.
_original_poll = monkey.get_original("select", "poll")
# Retries are the caller's decision (budgets, idempotency); one immutable
# "never" policy spares urllib3 building a Retry object on every call.
_NO_RETRIES = Retry(total=False, redirect=False)


class _CheapLivenessCheck:
    """Checks an idle pooled connection with the unpatched ``select.poll``.

    urllib3 polls every connection it takes from the pool to see whether the
    server closed it; through gevent's ``poll`` that check was ~10% of a
    fan-out worker's CPU.
    """

    sock: Any

    @property
    def is_connected(self) -> bool:
        """True while the socket is open and has nothing unread (no FIN)."""
        if self.sock is None:
            return False
        poller = _original_poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)


class _Connection(_CheapLivenessCheck, HTTPConnection):
    pass


class _TLSConnection(_CheapLivenessCheck, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class _TotalTimeout(Exception):
    """Raised by the call's own ``gevent.Timeout``; never escapes ``http_get``."""


@dataclass(frozen=True)
class Response:
    """An upstream's answer, read in full; the attribute names follow ``requests``."""

    status_code: int
    headers: urllib3.HTTPHeaderDict
    content: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not JSON)."""
        return json.loads(self.content)


_pools: dict[str, Any] = {"pid": None, "by_origin": {}}


def get_pool(scheme: str, host: str, port: int | None) -> HTTPConnectionPool:
    """Return this process's connection pool for one upstream origin."""
    if _pools["pid"] != os.getpid():
        _pools.update(pid=os.getpid(), by_origin={})
    key = (scheme, host, port)
    pool = _pools["by_origin"].get(key)
    if pool is None:
        from django.conf import settings

        pool_class = _TLSPool if scheme == "https" else _Pool
        pool = pool_class(
            host,
            port,
            maxsize=settings.HTTP_POOL_MAXSIZE,
            block=False,
            retries=_NO_RETRIES,
        )
        _pools["by_origin"][key] = pool
    return pool


def http_get(
    url: str,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """GET ``url`` (plus ``params``) and read the whole answer within ``timeout`` s.

    ``timeout`` bounds the whole call, body included: a per-read timeout alone
    would let a body that trickles in forever hold the leg. Redirects are not
    followed. Timeouts surface as ``TimeoutError`` and failures to connect or
    broken connections as ``ConnectionError``, with messages that do not reveal
    the upstream's address to our clients.
    """
    from django.conf import settings

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("upstream URL must be absolute http(s)")
    query = parts.query
    if params:
        query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    target = f"{parts.path or '/'}?{query}" if query else parts.path or "/"
    pool = get_pool(parts.scheme, parts.hostname, parts.port)
    connect = min(settings.HTTP_CONNECT_TIMEOUT_S, timeout)
    try:
        with gevent.Timeout(timeout, _TotalTimeout):
            answer = pool.urlopen(
                "GET",
                target,
                headers=headers,
                timeout=urllib3.Timeout(connect=connect, read=timeout),
                retries=_NO_RETRIES,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
            )
    except NewConnectionError as exc:
        # A subclass of ConnectTimeoutError in urllib3 2, so it comes first.
        raise ConnectionError("could not connect to upstream") from exc
    except Urllib3Timeout as exc:
        if isinstance(exc, ReadTimeoutError):
            raise TimeoutError(
                f"no answer from upstream within {timeout * 1000:.0f} ms"
            ) from exc
        raise TimeoutError(f"could not connect within {connect * 1000:.0f} ms") from exc
    except _TotalTimeout as exc:
        raise TimeoutError(
            f"upstream answer not complete within {timeout * 1000:.0f} ms"
        ) from exc
    except HTTPError as exc:
        raise ConnectionError("upstream connection failed") from exc
    return Response(answer.status, answer.headers, answer.data)
