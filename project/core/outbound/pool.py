"""The pooled client for one upstream origin, per worker.

geventhttpclient's ``HTTPClient`` and its socket pool, with four changes
(geventhttpclient 2.6, pinned; ``tests/core/test_http_pool.py`` checks each):
idle sockets are checked with ``poll`` (``PollLivenessCheck``), closed after
``HTTP_POOL_IDLE_S`` (``IdleLimit``), the upstream's address is looked up
once per ``DNS_TTL_S`` for all of them (``http_dns.SharedLookup``), and
the pool's connections are handed out by traffic class and client
(``FairCheckout``), not first come first served.

Pools are built lazily after gunicorn forks (a pool created in the master
would share sockets across workers). Upstream hosts come from configuration,
never from clients, so the number of pools stays small.
"""

import select
import time
from typing import Any

import gevent
from django.conf import settings
from gevent import monkey
from geventhttpclient import HTTPClient
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.header import Headers

from .. import fd_budget
from ..caller import Caller, caller_or_anonymous
from ..fair_share import ClassSlots
from ..per_process import PerProcess
from ..request_context import REQUEST_ID_HEADER, with_request_id_header
from ..upstream_metrics import (
    UpstreamMeter,
    flush_pending,
    origin_label,
    upstream_meter,
)
from .dns import SharedLookup

# Connect timeout of an outbound connection (the call's own timeout caps it too).
CONNECT_TIMEOUT_S = 2.0
# How long an upstream's resolved address is reused for new connections: a
# worker looks each upstream up once per period, not once per connection.
DNS_TTL_S = 30.0
# No per-read limit on a connected socket: the call's own gevent.Timeout bounds
# connect, headers and body together (client._call), and a socket timeout would
# make gevent arm a timer for every read and write: three timers a leg, 1.5 %
# of a W1 worker's CPU in the profile (loadtests/profile_fanout.py).
_READ_TIMEOUT_S = None
# How often the open/idle socket gauges are set from the pools' own state.
_COUNT_SOCKETS_EVERY_S = 1.0
# Request heads remembered per upstream client (``Client.get_request``): a
# fan-out sends the same few targets thousands of times a second, and an
# aggregation's targets carry client parameters, so the oldest goes first
# (1024 of a few hundred bytes each).
MAX_REQUEST_HEADS = 1024
# What stands for the request id while a head is built, split out afterwards.
_ID_MARK = "-"
_ID_LINE = f"\r\n{REQUEST_ID_HEADER}: {_ID_MARK}\r\n"
# A zero-timeout poll never blocks, so the unpatched one is safe on the loop.
_original_poll = monkey.get_original("select", "poll")


class PollLivenessCheck(ConnectionPool):
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


class IdleLimit(ConnectionPool):
    """Closes pooled sockets idle longer than ``idle_s``; says which are reused.

    geventhttpclient keeps an idle socket until it is used again, so one burst
    left its sockets (and the upstream's) open for good. Sockets returned to
    the pool are stamped; a sweep on a loop timer closes the stale ones, and
    ``pick`` never hands one out.
    """

    idle_s: float  # set by limit_idle() from HTTP_POOL_IDLE_S
    _returned: dict[Any, float]  # socket -> when it went idle
    _sweeper: Any = None  # the loop timer, started with the first idle socket

    def limit_idle(self, idle_s: float) -> None:
        """Close sockets idle for ``idle_s`` seconds from now on."""
        self.idle_s = idle_s
        self._returned = {}

    def pick(self) -> tuple[Any, bool]:
        """A socket for a caller holding a slot, and whether it was used before."""
        now = time.monotonic()
        while not self._socket_queue.empty():
            sock = self._socket_queue.get(block=False)
            returned = self._returned.pop(sock, 0.0)
            if now - returned < self.idle_s and self._is_socket_alive(sock):
                return sock, True
            _close_quietly(sock)
        return self._create_socket(), False

    def keep_idle(self, sock: Any) -> None:
        """Pool ``sock`` again, stamped with the time it went idle."""
        if self._closed:
            _close_quietly(sock)
            return
        if self._sweeper is None:
            # ref=False: an idle pool must not keep the loop (or a test) alive.
            self._sweeper = gevent.get_hub().loop.timer(
                self.idle_s, self.idle_s, ref=False
            )
            self._sweeper.start(self.sweep)
        self._returned[sock] = time.monotonic()
        self._socket_queue.put(sock)

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


class FairCheckout(IdleLimit):
    """Connections handed out by traffic class, then client by client.

    geventhttpclient's pool is one FIFO semaphore: in a worker whose demo
    fan-outs (sheddable) queued 20,000 ten-second legs on one origin, a
    critical aggregation's call to that origin waited behind all of them
    (21% 2xx, p50 6 s). ``fair_share.ClassSlots`` serves critical waiters
    before normal ones before sheddable ones, keeps a quarter of the
    connections out of sheddable hands, and lets waiting clients of a class
    take turns. Which caller asks is ``caller.current_caller()``, which
    ``fan_out`` hands to its legs.
    """

    _slots: ClassSlots
    _holders: dict[Any, Caller]  # socket checked out -> the caller holding its slot

    def share_slots(self) -> None:
        """Hand out this pool's ``size`` slots by class and client from now on."""
        self._slots = ClassSlots(self.size)
        self._holders = {}

    def checkout(self) -> tuple[Any, bool]:
        """A socket (waiting for a slot, in turn) and whether it was used before."""
        caller = caller_or_anonymous()
        self._slots.acquire(caller)
        try:
            sock, reused = self.pick()
        except BaseException:
            self._slots.release(caller)
            raise
        self._holders[sock] = caller
        return sock, reused

    def return_socket(self, sock: Any) -> None:
        """Pool ``sock`` again and free its slot."""
        caller = self._holders.pop(sock)
        self.keep_idle(sock)
        self._slots.release(caller)

    def release_socket(self, sock: Any) -> None:
        """Close ``sock`` (no longer usable) and free its slot."""
        _close_quietly(sock)
        self._slots.release(self._holders.pop(sock))

    def in_use(self) -> int:
        """Slots taken (sockets checked out) now."""
        return self._slots.in_use


class UpstreamPool(FairCheckout, PollLivenessCheck, SharedLookup):
    """An upstream's socket pool (plain HTTP) with the changes above."""


class TLSUpstreamPool(UpstreamPool, SSLConnectionPool):
    """An upstream's socket pool for https, with the changes above."""


class Client(HTTPClient):
    """geventhttpclient's ``HTTPClient``, used for its pool and request builder."""

    # identity only: a compressed body would be a bomb we must first defuse.
    DEFAULT_HEADERS = Headers(
        {"User-Agent": "gevent-django", "Accept-Encoding": "identity"}
    )
    # What HTTPClient builds becomes one of ours in __init__.
    _connection_pool: UpstreamPool
    # Counts calls made without a configured upstream name (None: metrics off).
    meter: UpstreamMeter | None

    def __init__(
        self,
        host: str,
        port: int | None,
        *args: Any,
        dns_ttl: float,
        idle_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, *args, **kwargs)
        pool = self._connection_pool
        pool.__class__ = TLSUpstreamPool if self.ssl else UpstreamPool
        pool.dns_ttl = dns_ttl
        pool.limit_idle(idle_s)
        pool.share_slots()
        self._heads: dict[
            tuple[str, tuple[tuple[str, str], ...] | None, bool],
            tuple[str, str | None],
        ] = {}
        self.meter = upstream_meter(
            origin_label(host, port, "https" if self.ssl else "http")
        )

    def get_request(
        self, target: str, headers: dict[str, str] | None, request_id: str | None
    ) -> str:
        """The GET of ``target`` exactly as ``_build_request`` writes it, with
        ``headers`` and ``X-Request-ID: request_id`` (unless ``headers`` name one).

        Built once per target and headers, the id put in its place per call:
        merging and checking the headers per call (geventhttpclient's
        ``_build_request`` and the header dict it was given) was 6.2 % of a W1
        worker. An id that is not plain printable ASCII goes the builder's way,
        whose checks may refuse it.
        """
        if request_id is not None and not (
            request_id.isascii() and request_id.isprintable()
        ):
            return self._build_request(
                "GET",
                target,
                headers=with_request_id_header(headers, request_id),
                chunked=False,
            )
        with_id = request_id is not None
        key = (target, tuple(headers.items()) if headers else None, with_id)
        head = self._heads.get(key)
        if head is None:
            head = self._build_head(target, headers, with_id)
            if len(self._heads) >= MAX_REQUEST_HEADS:
                del self._heads[next(iter(self._heads))]
            self._heads[key] = head
        before, after = head
        if after is None or request_id is None:
            return before
        return before + request_id + after

    def _build_head(
        self, target: str, headers: dict[str, str] | None, with_id: bool
    ) -> tuple[str, str | None]:
        """The request split around its id's value; ``(request, None)`` when it
        carries none of ours."""
        headers = with_request_id_header(headers, _ID_MARK if with_id else None)
        request = self._build_request("GET", target, headers=headers, chunked=False)
        before, line, after = request.partition(_ID_LINE)
        if not line:
            return request, None
        return f"{before}\r\n{REQUEST_ID_HEADER}: ", f"\r\n{after}"

    @property
    def pool(self) -> UpstreamPool:
        """The upstream's socket pool."""
        return self._connection_pool


_pools: PerProcess[dict[tuple[str, str, int | None], Client]] = PerProcess(dict)


def get_pool(scheme: str, host: str, port: int | None) -> Client:
    """Return this process's client (a connection pool) for one upstream origin."""
    by_origin = _pools.get()
    key = (scheme, host, port)
    pool = by_origin.get(key)
    if pool is None:
        pool = Client(
            host,
            port,
            ssl=scheme == "https",
            concurrency=settings.HTTP_POOL_MAXSIZE,
            connection_timeout=CONNECT_TIMEOUT_S,
            network_timeout=_READ_TIMEOUT_S,
            dns_ttl=DNS_TTL_S,
            idle_s=settings.HTTP_POOL_IDLE_S,
        )
        by_origin[key] = pool
        fd_budget.check(upstreams=len(by_origin))
        if pool.meter is not None:
            _socket_counter.get()
    return pool


def count_sockets() -> None:
    """Set ``gd_upstream_connections`` (open, idle) from each pool's own state,
    and write the attempts counted since the last time.

    On a timer, not per call: two gauge writes on every checkout and return
    cost W1 about 2% of its CPU; a scrape every few seconds needs no more
    than a value a second old. Open sockets are the pool's slots taken
    (checked out) plus its idle ones.
    """
    flush_pending()
    for client in (_pools.peek() or {}).values():
        meter, pool = client.meter, client.pool
        if meter is not None:
            idle = pool.idle_count()
            meter.idle_sockets.set(idle)
            meter.open_sockets.set(pool.in_use() + idle)


def _start_socket_counter() -> Any:
    """This process's timer running ``count_sockets`` (ref=False: never keeps
    the loop alive)."""
    timer = gevent.get_hub().loop.timer(
        _COUNT_SOCKETS_EVERY_S, _COUNT_SOCKETS_EVERY_S, ref=False
    )
    timer.start(count_sockets)
    return timer


_socket_counter: PerProcess[Any] = PerProcess(_start_socket_counter)


def open_sockets() -> dict[str, int]:
    """Idle pooled sockets per upstream origin in this process."""
    return {
        f"{scheme}://{host}:{port}": client.pool.idle_count()
        for (scheme, host, port), client in (_pools.peek() or {}).items()
    }
