"""Notice when a client closes its connection while its request is still running."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
from gevent.event import Event
from gevent.socket import wait_read


@contextmanager
def client_disconnect(sock: socket.socket | None) -> Iterator[Event | None]:
    """Yield an Event set if the client closes ``sock`` before the block ends.

    A watcher greenlet waits for the socket to become readable and peeks: end
    of file means the client is gone (a request body was already read, so any
    other data is a pipelined request and ends the watch). ``sock`` is
    gunicorn's ``environ["gunicorn.socket"]``; None (another server, the test
    client) yields None: nothing to watch.
    """
    if sock is None:
        yield None
        return
    gone = Event()

    def watch() -> None:
        try:
            wait_read(sock.fileno())
            closed = sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            closed = True
        if closed:
            gone.set()

    watcher = gevent.spawn(watch)
    try:
        yield gone
    finally:
        watcher.kill()


def client_has_left(sock: socket.socket) -> bool:
    """True if the client has closed ``sock`` (checked now, without waiting).

    Peeks on the underlying socket: gevent's would wait for data instead of
    reporting that none is there.
    """
    raw = getattr(sock, "_sock", sock)
    try:
        return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
