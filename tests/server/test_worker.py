"""The worker's bookkeeping of connections waiting for a request, in-process."""

import time
from types import SimpleNamespace

import gevent
import gevent.socket
import pytest
from gunicorn.workers import ggevent

from project.core import loop_turns
from project.core.route_priority import Priority
from project.server.admission.gate import Gate, GateConfig
from project.server.worker import (
    GeventWorker,
    OneWriteResponse,
    WaitingConnections,
    read_first,
)


def _waiter(registry: WaitingConnections, seconds: float, log: list) -> None:
    started = time.monotonic()
    with registry.wait(seconds):
        gevent.sleep(30)
        log.append("request arrived")  # never: the wait ends first
    log.append(round(time.monotonic() - started, 1))


def test_reclaim_ends_the_longest_waits_first_and_quietly():
    """Three waits; reclaiming two ends the two oldest at once, without an
    exception, and leaves the newest listed."""
    registry = WaitingConnections()
    logs = [[], [], []]
    waiters = []
    for log in logs:
        waiters.append(gevent.spawn(_waiter, registry, 10, log))
        gevent.sleep(0.01)
    assert len(registry) == 3
    assert registry.reclaim(2) == 2
    gevent.joinall(waiters[:2], timeout=1)
    assert [w.dead and w.successful() for w in waiters] == [True, True, False]
    # Ended by the reclaim, long before their own 10 s timeout; a wide margin
    # because a loaded machine can delay the first waiter by tens of ms.
    assert [len(log) for log in logs[:2]] == [1, 1]
    assert all(log[0] < 2 for log in logs[:2])
    assert len(registry) == 1
    waiters[2].kill()


def test_the_wait_keeps_its_timeout():
    """Nothing reclaimed: the wait still ends at its own timeout."""
    registry = WaitingConnections()
    log: list = []
    gevent.spawn(_waiter, registry, 0.2, log).join(timeout=2)
    assert log == [0.2]
    assert len(registry) == 0


def test_a_wait_that_ended_before_the_reclaim_fires_is_left_alone():
    """The request arrives between reclaim() and the loop's next turn: the
    timeout must not land in the request's handling."""
    registry = WaitingConnections()
    with registry.wait(10):
        assert registry.reclaim(1) == 1  # this very wait; it fires on a later turn
    gevent.sleep(0.05)  # "handling the request": the loop turns meanwhile
    assert len(registry) == 0


def test_reclaims_are_reported():
    counts: list[int] = []
    registry = WaitingConnections(counts.append)
    waiters = [gevent.spawn(_waiter, registry, 10, []) for _ in range(3)]
    gevent.sleep(0.01)
    registry.reclaim(16)
    assert registry.reclaim(16) == 0
    assert counts == [3]
    gevent.joinall(waiters, timeout=1)


class _Socket:
    """Records what a response writes, one entry per send or sendall (each
    send takes all it is given)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def _response(sock: _Socket) -> OneWriteResponse:
    from gunicorn.config import Config
    from gunicorn.http.message import Request

    req = Request.__new__(Request)  # what a response reads of its request
    req.version, req.method, req.headers = (1, 1), "GET", []
    req.should_close = lambda: False
    return OneWriteResponse(req, sock, Config())


def test_headers_and_body_leave_in_one_write():
    """A worker killed between two writes would leave a proxy holding headers
    without a body, too late to retry elsewhere: one write, whole or nothing."""
    sock = _Socket()
    response = _response(sock)
    response.start_response("200 OK", [("Content-Length", "11")])
    response.write(b"hello world")
    response.write(b"")  # gunicorn's bookkeeping: nothing more to send
    assert len(sock.writes) == 1
    head, _, body = sock.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 11" in head
    assert body == b"hello world"
    assert response.headers_sent and response.sent == 11


def test_a_client_read_runs_first_in_its_loop_turn():
    """A client's socket and twenty upstream ones become readable in the same
    loop turn: the client's reader runs first, wherever libev (which works
    through a turn's ready watchers newest first) would have put it."""
    order = []
    pairs = [gevent.socket.socketpair() for _ in range(21)]
    read_first(pairs[0][0])

    def reader(name: object, sock: gevent.socket.socket) -> None:
        sock.recv(1)
        order.append(name)

    names = ["client", *range(20)]
    readers = [
        gevent.spawn(reader, n, ours) for n, (ours, _) in zip(names, pairs, strict=True)
    ]
    gevent.sleep(0.01)  # every reader waits in recv
    for _, peer in pairs:  # sends that do not block: no loop turn between them
        peer.send(b"x")
    gevent.joinall(readers, timeout=2)
    for pair in pairs:
        for sock in pair:
            sock.close()
    assert len(order) == 21
    assert order[0] == "client"


@pytest.mark.parametrize(
    ("shedding", "storm", "yields"),
    [(True, False, True), (False, False, False), (True, True, False)],
)
def test_while_shedding_an_admitted_request_starts_after_the_turns_other_work(
    shedding, storm, yields, monkeypatch
):
    """While the worker sheds, an admitted request's work goes to the back of
    gevent's batch of woken greenlets (bounded, loop_turns.py), not into the
    turn where refusals wait; otherwise, and in a storm (whose refusals wait
    for the budget's tokens anyway), it starts at once."""
    order = []
    monkeypatch.setattr(
        ggevent.GeventWorker, "handle_request", lambda self, *args: order.append("app")
    )
    worker = GeventWorker.__new__(GeventWorker)
    admission = SimpleNamespace(gate=Gate(GateConfig()))
    admission.gate.budget.adapt(storm=storm)
    request = SimpleNamespace(path="/demo/fan-out/")
    loop_turns.shorten(shedding)
    try:
        admitted = gevent.spawn(
            worker._admitted,
            admission,
            Priority.SHEDDABLE,
            "client",
            0.0,
            time.monotonic() + 60,
            "listener",
            request,
            None,
            None,
        )
        other = gevent.spawn(order.append, "other")
        gevent.joinall([admitted, other], timeout=2)
    finally:
        loop_turns.shorten(False)
    assert order == (["other", "app"] if yields else ["app", "other"])
    assert admission.gate.in_flight == 0
