"""gunicorn's gevent worker, accepting new connections in small batches.

With more than one worker, gunicorn's gevent worker accepts one connection per
wake-up of its listening socket (``max_accept = 1``, gunicorn PR #2266, so that
one worker does not grab a burst the others could serve). But a wake-up comes
once per event-loop iteration, and on a saturated worker an iteration runs
every ready greenlet first: hundreds of milliseconds. Accepting then slows to a
few connections per second, and a client that connects while the workers are
busy waits for the whole burst to end: 400 keep-alive clients against two
saturated workers left the last 60 unanswered for 12 s while the others were
served in 0.3 s. Accepting up to ``ACCEPT_BATCH`` (16) per wake-up keeps new
connections flowing and still spreads a burst over the workers (measured:
205/195 connections on two workers, the last served in 1.5 s). 1 would
restore gunicorn's behaviour.

When all ``worker_connections`` slots are taken, the worker closes the
connections that have waited longest for a request (new connections still
sending headers, keep-alive connections between requests) to make room, as
nginx does when its connections run out (``ngx_drain_connections``, "worker
connections are not enough, reusing connections"). Otherwise idle or slowloris
connections hold every slot for up to ``keepalive`` seconds and nobody else is
accepted: 3,000 such connections kept ``/healthz`` waiting 9 s. A connection
with a request in progress is never closed for this.

Every request's deadline is read here, once, as it arrives: its
``X-Request-Timeout-Ms`` or the default (``deadline.request_deadline``). It
goes to the application in the WSGI environ (``DEADLINE_KEY``), where the
middleware makes it the request's current deadline, so time spent waiting for
admission counts against it; a header that is not valid goes there too, and
the middleware answers it with a 400 naming the header.

Every request (but exempt routes: probes, metrics) passes admission control
(``project/server/admission``) before the WSGI application sees it: over the
worker's adaptive limit it waits briefly for a slot or gets a canned 503 at
once. While the gate is contended, only the request's head is scanned
(``raw_head``) and gunicorn parses what is admitted, so a refusal costs no
parse.
A client connection's reads run first in each event-loop turn
(``read_first``): on a saturated worker a turn runs every ready upstream
answer and request before the loop polls again, and a request read at the
turn's end waited through all of it to be admitted or refused.

A response's headers and its first body bytes go out in one write
(``OneWriteResponse``): gunicorn writes them separately, and a worker killed
between the two writes (``kill -9``, the OOM killer) left a proxy holding
headers it had passed on to its client and no body, too late to retry the
request on another instance (nginx's ``proxy_next_upstream`` works only while
nothing was sent). With one write the proxy gets the whole answer or nothing.

When the worker stops gracefully (SIGTERM, ``max_requests``), gunicorn closes
its listening socket. Connections the kernel has already completed and queued
there (their clients connected, most have sent a request) are reset when the
last descriptor of that socket closes: a client that saw its connect succeed
lost its request (1 in a container restart under 20 connections).
``BatchAcceptServer.close`` first accepts what is queued and serves it as
usual; gunicorn answers each with ``Connection: close`` since the worker is no
longer alive. A connect after the close is refused, never accepted.

Nothing here imports Django: gunicorn's master loads the worker class before
forking, and the master must stay unpatched and Django-free.
"""

import email.utils
import functools
import ipaddress
import json
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

import gevent
from gevent.server import StreamServer
from gunicorn import http, util
from gunicorn.http import wsgi
from gunicorn.http.errors import ParseException
from gunicorn.workers import ggevent

from project.core import loop_turns
from project.core.caller import caller_scope
from project.core.deadline import (
    DEADLINE_HEADER,
    Deadline,
    InvalidTimeout,
    request_deadline,
)
from project.core.disconnect import client_gone_at_once
from project.core.request_context import DEADLINE_KEY
from project.core.route_priority import Priority, RoutePriorities, traffic_class
from project.core.socket_send import send_nonblock, send_whole
from project.server import raw_head
from project.server.admission import runtime as admission
from project.server.admission.loop_busy import HIGHEST_PRIORITY
from project.server.admission.refusal_budget import came_back_at_once
from project.server.raw_head import RawHead
from project.server.settled_config import SettledConfig, SettledEnviron

# New connections a worker accepts each time its listening socket wakes it.
# gunicorn's own gevent worker accepts 1 when there are several workers; on
# saturated workers a wake-up comes only once per event-loop iteration (hundreds
# of ms), so new clients waited seconds while connected ones were served.
ACCEPT_BATCH = 16


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, but the headers go out with the first body bytes."""

    def write(self, arg: bytes) -> None:
        """The first write of a plain (not chunked) body: headers and body in
        one write (``send_whole``), with gunicorn's bookkeeping; any other:
        gunicorn's."""
        if (
            self.headers_sent  # type: ignore[has-type]  # gunicorn is untyped
            or self.chunked
            or self._omits_body
            or not isinstance(arg, bytes)
            or not arg
        ):
            super().write(arg)
            return
        if self.response_length is not None:
            arg = arg[: max(self.response_length - self.sent, 0)]
        tosend = self.default_headers()
        tosend.extend(f"{key}: {value}\r\n" for key, value in self.headers)
        head = util.to_bytestring("{}\r\n".format("".join(tosend)), "latin-1")
        send_whole(self.sock, head + arg)
        self.headers_sent = True
        self.sent += len(arg)


class CachedHttpDate:
    """gunicorn's ``util.http_date`` for the current time, formatted once a
    second instead of once a response (``email.utils.formatdate`` was 0.6 % of
    a W1 worker's CPU); a timestamp given is formatted as gunicorn would."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, timestamp: float | None = None) -> str:
        """The ``Date`` header's value for ``timestamp`` (default: now)."""
        if timestamp is not None:
            return email.utils.formatdate(timestamp, localtime=False, usegmt=True)
        second = int(time.time())
        if second != self._second:
            self._text = email.utils.formatdate(second, localtime=False, usegmt=True)
            self._second = second
        return self._text


# When a connection's last request was refused, and at which poll of the
# event loop (an attribute of the greenlet that serves the connection): is the
# next one a retry at once (refusal_budget.came_back_at_once)?
REFUSED_AT = "_gd_refused_at"

# At most one "connections are not enough" warning per this many seconds.
RECLAIM_LOG_INTERVAL_S = 10.0


class _Waiting:
    """The header wait of one connection: gunicorn's keep-alive timeout, and
    the connection listed as reclaimable until its request has arrived."""

    def __init__(self, registry: "WaitingConnections", seconds: float) -> None:
        self.registry = registry
        self.timeout = gevent.Timeout(seconds, False)
        self.greenlet = gevent.getcurrent()
        self.waiting = False

    def __enter__(self) -> "_Waiting":
        self.timeout.__enter__()
        self.waiting = True
        self.registry.add(self)
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        self.waiting = False
        self.registry.discard(self)
        return self.timeout.__exit__(*exc_info)

    def end(self) -> None:
        """End the wait soon, as its timeout would: the connection closes quietly."""
        gevent.get_hub().loop.run_callback(self._fire)

    def _fire(self) -> None:
        # The request may have arrived since end(): thrown then, the timeout
        # would land in the request's handling instead of this wait.
        if self.waiting:
            self.greenlet.throw(self.timeout)


class WaitingConnections:
    """The worker's connections waiting for a request, oldest first."""

    def __init__(self, on_reclaim: Callable[[int], None] = lambda count: None) -> None:
        self._waits: OrderedDict[int, _Waiting] = OrderedDict()
        self.on_reclaim = on_reclaim
        self.reclaimed = 0

    def __len__(self) -> int:
        return len(self._waits)

    def wait(self, seconds: float) -> _Waiting:
        """Context manager around reading one request's headers."""
        return _Waiting(self, seconds)

    def add(self, waiting: _Waiting) -> None:
        """List a connection that starts waiting for a request."""
        self._waits[id(waiting)] = waiting

    def discard(self, waiting: _Waiting) -> None:
        """Unlist a connection whose request arrived (or whose wait ended)."""
        self._waits.pop(id(waiting), None)

    def reclaim(self, count: int) -> int:
        """Close up to ``count`` of the longest-waiting connections; how many."""
        closed = 0
        while closed < count and self._waits:
            _, waiting = self._waits.popitem(last=False)
            waiting.end()
            closed += 1
        if closed:
            self.reclaimed += closed
            self.on_reclaim(closed)
        return closed


def busy_connections() -> int:
    """Connections this worker is serving now: one greenlet each."""
    return sum(len(server.pool) for server in SERVERS if server.pool is not None)


class BatchAcceptServer(StreamServer):
    """A StreamServer whose ``max_accept`` stays at the configured batch, and
    that reclaims waiting connections when its pool is full."""

    batch = ACCEPT_BATCH
    waiting = WaitingConnections()
    # gevent's BaseServer.full, and ours in its place (set_spawn).
    full: Callable[[], bool]
    # gevent's: what serves an accepted connection (gunicorn's handler).
    _handle: Callable[..., Any]
    pool_full: Callable[[], bool]

    def set_spawn(self, spawn: Any) -> None:
        """Use the pool as gunicorn gives it, with ``full`` below in front."""
        super().set_spawn(spawn)
        self.pool_full = self.full
        self.full = self._full_after_reclaiming
        SERVERS.append(self)

    def _full_after_reclaiming(self) -> bool:
        # Called before each accept. When the pool is full, end up to a batch
        # of the longest waits: their slots free on the loop's next turn, and
        # the pool's own wake-up resumes accepting (gevent's baseserver).
        if not self.pool_full():
            return False
        self.waiting.reclaim(self.batch)
        return True

    def close(self) -> None:
        """Serve the connections queued on the listener, then close it.

        Closing a listening socket's last descriptor makes the kernel reset
        every connection still in its accept queue: completed, often with a
        request sent, never read. gunicorn's worker closes its listener when
        it stops; accepting what is queued first gets each its answer.
        """
        if not self.closed and self.started:
            self._serve_queued()
        super().close()

    def _serve_queued(self) -> None:
        # gunicorn's handler asks the listener for its name as the
        # connection's greenlet starts, once close() has closed it: hand
        # these connections the name instead of the listener.
        handle = self._handle
        if isinstance(handle, functools.partial) and handle.args:
            name = handle.args[0].getsockname()
            self._handle = functools.partial(
                handle.func, _ClosedListener(name), *handle.args[1:]
            )
        while True:  # until EAGAIN: the listener's socket does not block
            try:
                accepted = self.do_read()
            except ConnectionAbortedError:  # its client gave up while queued
                continue
            except OSError:  # out of descriptors: the rest cannot be taken
                return
            if not accepted:
                return
            # A full pool: end the longest idle waits, as accepting does
            # (full()), then wait for a slot.
            self.full()
            self.do_handle(*accepted)

    @property
    def max_accept(self) -> int:
        """Connections accepted per wake-up of the listening socket."""
        return self.batch

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        # gunicorn's worker sets 1 when there are several workers; the batch
        # (1 included, when configured) is what this server uses instead.
        pass


class _ClosedListener:
    """A closed listener's name: what gunicorn's handler asks of it."""

    def __init__(self, name: Any) -> None:
        self._name = name

    def getsockname(self) -> Any:
        """The name the listener had."""
        return self._name


# This worker's servers (one per listening socket), for busy_connections.
SERVERS: list[BatchAcceptServer] = []


def read_first(sock: Any) -> None:
    """Have the event loop wake ``sock``'s reader before the other watchers
    ready in the same turn (libev runs pending watchers by priority).

    A client's next request is then admitted or refused before the turn's
    upstream answers and responses are worked through. One worker at 3x its
    W1 capacity (open model, ``make overload``): refusals' p99 20/22/17 ms ->
    15/13/15 ms in the same rounds, goodput unchanged.
    """
    sock._read_event.priority = HIGHEST_PRIORITY


def write_json_error(
    sock: socket.socket, status_int: int, reason: str, mesg: str
) -> None:
    """gunicorn's ``util.write_error`` with a JSON body instead of HTML.

    gunicorn answers requests it cannot parse (a request line or header over
    its limits, a malformed request) itself, before the app: with this, those
    answers are JSON like every other error of the service.
    """
    body = json.dumps({"error": reason.lower(), "detail": str(mesg)[:200]}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# As gunicorn's parser spells header names.
_DEADLINE_HEADER = DEADLINE_HEADER.upper()

# The deadline read for the request this greenlet serves, until gunicorn has
# built its environ (after handle_request hands over): ``carrying_deadline``
# puts it there.
_carried: ContextVar[Deadline | InvalidTimeout | None] = ContextVar(
    "carried_deadline", default=None
)


def read_deadline(
    headers: list[tuple[str, str]], arrived: float
) -> tuple[Deadline | InvalidTimeout, float]:
    """The request's deadline (or what is wrong with its header) and, for
    admission, when it is due: an invalid header's request gets the default,
    its 400 is quick."""
    # Repeated headers are joined, as in the environ: never a valid value.
    values = [value for name, value in headers if name == _DEADLINE_HEADER]
    try:
        deadline = request_deadline(
            ",".join(values) if values else None, arrived=arrived
        )
    except InvalidTimeout as exc:
        return exc, request_deadline(None, arrived=arrived).expires
    return deadline, deadline.expires


def carrying_deadline(app: Callable[..., Any]) -> Callable[..., Any]:
    """The WSGI ``app``, called with the deadline this worker read in its environ."""

    def app_with_deadline(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        carried = _carried.get()
        if carried is not None:
            environ[DEADLINE_KEY] = carried
        result: Iterable[bytes] = app(environ, start_response)
        return result

    return app_with_deadline


def has_body(req: Any) -> bool:
    """Whether a parsed request announced a body (left unread if refused)."""
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING" or (
            name == "CONTENT-LENGTH" and value.strip() not in ("", "0")
        ):
            return True
    return False


class ClientKeys:
    """Who a request comes from, for admission's fair shares: the peer's
    address, or the last ``X-Forwarded-For`` entry when the peer is a trusted
    proxy (gunicorn's ``forwarded_allow_ips``, as the access log reads it).

    Not the bearer token: the gate runs before anything checks a token, and
    made-up tokens would buy a client as many shares as it sends.
    """

    def __init__(self, proxies: list[str]) -> None:
        self._any = "*" in proxies
        self._networks = []
        for proxy in proxies:
            try:
                self._networks.append(ipaddress.ip_network(proxy, strict=False))
            except ValueError:
                continue
        # Peers are few (clients, a proxy or two): decide each once.
        self._trusted: dict[str, bool] = {}

    def _is_proxy(self, peer: str) -> bool:
        trusted = self._trusted.get(peer)
        if trusted is None:
            if len(self._trusted) > 10000:
                self._trusted.clear()
            try:
                ip = ipaddress.ip_address(peer)
                trusted = self._any or any(ip in net for net in self._networks)
            except ValueError:
                trusted = False  # a unix socket peer
            self._trusted[peer] = trusted
        return trusted

    def key(self, addr: Any, headers: list[tuple[str, str]]) -> str:
        """The client key of a request from ``addr`` with ``headers``."""
        peer = addr[0] if isinstance(addr, tuple) and addr else str(addr or "")
        if self._is_proxy(peer):
            for name, value in reversed(headers):
                if name == "X-FORWARDED-FOR":
                    return value.rsplit(",", 1)[-1].strip() or peer
        return peer


class GeventWorker(ggevent.GeventWorker):
    """gunicorn's gevent worker serving through ``BatchAcceptServer``, with
    admission control in front of the application."""

    wsgi: Callable[..., Any]  # gunicorn's application (load_wsgi)
    cfg: Any  # gunicorn's Config, then SettledConfig (run)
    waiting_connections: WaitingConnections
    client_keys: ClientKeys
    _route_priorities: RoutePriorities | None = None
    _last_reclaim_log = float("-inf")
    _unlogged_reclaims = 0

    def load_wsgi(self) -> None:
        """gunicorn's application, handed each request's deadline."""
        super().load_wsgi()
        self.wsgi = carrying_deadline(self.wsgi)

    def timeout_ctx(self) -> _Waiting:
        """gunicorn's header timeout (``keepalive`` s), listed as reclaimable."""
        return self.waiting_connections.wait(self.cfg.keepalive)

    def _log_reclaim(self, count: int) -> None:
        self._unlogged_reclaims += count
        now = time.monotonic()
        if now - self._last_reclaim_log < RECLAIM_LOG_INTERVAL_S:
            return
        self.log.warning(
            "worker_connections (%s) are not enough: closed %s connection(s) "
            "that waited longest for a request",
            self.worker_connections,
            self._unlogged_reclaims,
        )
        self._last_reclaim_log = now
        self._unlogged_reclaims = 0

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve a connection as gunicorn does, its reads first in each loop turn."""
        read_first(client)
        super().handle(listener, client, addr)

    def handle_error(
        self, req: Any, client: Any, addr: Any, exc: BaseException
    ) -> None:
        """gunicorn's error answer; for a ``RawHead``, its parsed request (or none)."""
        if type(req) is RawHead:
            req = req.parsed
        super().handle_error(req, client, addr, exc)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        """Admit the request (or refuse it), then serve it as gunicorn does,
        as its client (``project.core.caller``: upstream shares by client)."""
        arrived = time.monotonic()
        carried, due = read_deadline(req.headers, arrived)
        _carried.set(carried)
        gate = admission.current()
        client = self.client_keys.key(addr, req.headers)
        priority = (gate.routes if gate else self._routes()).priority(req.path)
        with caller_scope(client=client, traffic_class=traffic_class(priority)):
            if gate is None or priority is Priority.EXEMPT:
                req = self._parsed(req, sock, addr)
                return super().handle_request(listener_name, req, sock, addr)
            return self._admitted(
                gate, priority, client, arrived, due, listener_name, req, sock, addr
            )

    def _parsed(self, req: Any, sock: Any, addr: Any) -> Any:
        """gunicorn's request for ``req``; a ``RawHead`` is parsed now, and a
        head gunicorn rejects is answered as gunicorn answers it."""
        if type(req) is not RawHead:
            return req
        try:
            return req.parse()
        except ParseException as exc:
            self.handle_error(None, sock, addr, exc)
            raise StopIteration() from exc

    def _routes(self) -> RoutePriorities:
        # Admission off: the routes' priorities still name their traffic class.
        if self._route_priorities is None:
            from django.conf import settings

            self._route_priorities = RoutePriorities.parse(settings.SHED_ROUTES)
        return self._route_priorities

    def _admitted(
        self,
        gate: admission.WorkerAdmission,
        priority: Priority,
        client: str,
        arrived: float,
        due: float,
        *args: Any,
    ) -> Any:
        """Serve a request that passes the gate (``args``: gunicorn's)."""
        listener_name, req, sock, addr = args
        connection = gevent.getcurrent()  # one greenlet serves a connection
        refused = getattr(connection, REFUSED_AT, None)
        if refused is not None:
            refused_at, refused_poll = refused
            loop = gate.loop
            if came_back_at_once(
                time.perf_counter() - refused_at,
                loop.polls - refused_poll,
                loop.last_wait_s,
                loop.polled_before - refused_at,
            ):
                gate.gate.retried_at_once()
        decision = gate.gate.enter(priority, due, client)
        if decision.reason is not None:
            # An unread body would be parsed as the next request: close instead.
            close = req.should_close() or has_body(req) or not self.alive
            send_nonblock(sock, gate.refusals.answer(decision.reason, close=close))
            if close:
                raise StopIteration()
            setattr(connection, REFUSED_AT, (time.perf_counter(), gate.loop.polls))
            return True
        if decision.waited_s and client_gone_at_once(
            sock, interim_allowed=req.version == (1, 1)
        ):
            # The client gave up while it waited: do not start the work.
            gate.gate.client_gone(priority, client)
            raise StopIteration()
        # While the worker sheds, the admitted request's work (Django, the
        # fan-out's start) runs in gevent's bounded batch of woken greenlets
        # instead of the turn's IO phase, where the refusals wait
        # (loop_turns.py). Not in a storm: its refusals wait for a token
        # anyway, and a closed loop's admitted requests only answered later
        # (AGG under wrk, 2 x 100 and 2 x 400: 0.96-0.99 of admission off,
        # against 0.98-1.00 without the yield). Not timed: the route's latency
        # is its own work.
        if not gate.gate.budget.storm:
            loop_turns.yield_to_loop()
        started = time.monotonic()
        try:
            req = self._parsed(req, sock, addr)
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            gate.gate.leave(client, req.path, time.monotonic() - started)

    def run(self) -> None:
        """Serve like gunicorn's worker, accepting in batches, errors in JSON."""
        # Every read of a setting from here on is an attribute lookup.
        self.cfg = SettledConfig(self.cfg)
        wsgi.base_environ = SettledEnviron(self.cfg)  # looked up per request
        self.waiting_connections = WaitingConnections(self._log_reclaim)
        self.client_keys = ClientKeys(list(self.cfg.forwarded_allow_ips or ()))
        BatchAcceptServer.waiting = self.waiting_connections
        # gunicorn's run() builds its servers from this module-level name, and
        # its handle_error() writes through util.write_error; both swaps
        # happen in the worker process, after the fork, and last for it.
        ggevent.StreamServer = BatchAcceptServer
        util.write_error = write_json_error
        util.http_date = CachedHttpDate()
        wsgi.Response = OneWriteResponse  # wsgi.create() looks the name up per request
        http.get_parser = raw_head.get_parser  # base_async looks it up per connection
        super().run()
