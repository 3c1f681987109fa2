"""Notice when a client closes its connection while its request is still running.

End of file alone does not say the client is gone: a client may shut down
only its sending side once the request is out (a half-close) and still read
the answer. What tells the two apart is writing: a client that closed
entirely answers any byte with a reset. So on end of file an HTTP/1.1 client
is sent an interim answer, ``103 Early Hints`` with no hints, which every
HTTP/1.1 client must read and skip before the final one (RFC 9110, 15.2), and
the connection is watched for that reset (and sent another a second later,
for as long as the request runs: a half-closed client may close for good).
An HTTP/1.0 client may not be sent one: it is taken to be still reading, and
its request runs to its deadline.
"""

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
from gevent.event import Event
from gevent.socket import wait_read

INTERIM = b"HTTP/1.1 103 Early Hints\r\n\r\n"
# When to look for the reset after an interim answer: loopback answers within
# microseconds, a distant client within its round trip. Then another interim
# answer a second later, for as long as the request runs.
RESET_CHECKS_S = (0.005, 0.05, 0.5)
RESET_CHECK_EVERY_S = 1.0


@contextmanager
def client_disconnect(
    sock: socket.socket | None, *, interim_allowed: bool = True
) -> Iterator[Event | None]:
    """Yield an Event set if the client closes ``sock`` before the block ends.

    A watcher greenlet waits for the socket to become readable and peeks:
    a reset means the client is gone; end of file that it stopped sending,
    which the interim answer settles (HTTP/1.1 only: ``interim_allowed``);
    other data is a pipelined request and ends the watch. ``sock`` is
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
            if sock.recv(1, socket.MSG_PEEK) != b"":
                return
        except OSError:
            gone.set()
            return
        if not interim_allowed:
            return
        # Again and again: a client that half-closed may close for good later,
        # and only another write would show it (any number of 1xx answers may
        # precede the final one).
        while not _answers_interim_with_reset(sock, RESET_CHECKS_S):
            gevent.sleep(RESET_CHECK_EVERY_S)
        gone.set()

    watcher = gevent.spawn(watch)
    try:
        yield gone
    finally:
        watcher.kill()


def client_has_left(sock: socket.socket) -> bool:
    """True if the client has reset ``sock`` (checked now, without waiting).

    End of file is not leaving: a half-closed client still reads its answer.
    Peeks on the underlying socket: gevent's would wait for data instead of
    reporting that none is there.
    """
    raw = getattr(sock, "_sock", sock)
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    # End of file: recv keeps saying so after a reset too (Linux checks the
    # end of the stream before the error), so the error is read directly.
    return raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0


def client_gone_at_once(sock: socket.socket, *, interim_allowed: bool) -> bool:
    """True if the client has left ``sock``, as far as one short look can tell.

    A reset is leaving. End of file is settled as in ``client_disconnect``:
    an HTTP/1.1 client is sent the interim answer and has the first reset
    check's time to reset (a distant one may take longer and is then served).
    """
    raw = getattr(sock, "_sock", sock)
    try:
        if raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b"":
            return False
    except BlockingIOError:
        return False
    except OSError:
        return True
    return interim_allowed and _answers_interim_with_reset(sock, RESET_CHECKS_S[:1])


def _answers_interim_with_reset(sock: socket.socket, pauses: tuple[float, ...]) -> bool:
    """Send the interim answer; whether the write fails or ``sock`` is reset
    by the end of ``pauses`` (looked at after each)."""
    try:
        sock.sendall(INTERIM)
    except OSError:
        return True
    for pause in pauses:
        gevent.sleep(pause)
        if client_has_left(sock):
            return True
    return False
