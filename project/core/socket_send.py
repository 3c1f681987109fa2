"""Writing to a socket in one ``send()`` where the data fits.

gevent's ``sendall`` asks the kernel for the socket's ``SO_SNDBUF`` on every
call (to size its chunks): a system call per upstream request (0.7 % of a W1
worker) and per answer and refusal gunicorn writes. A request, or an answer
of a few kilobytes, goes whole into an empty send buffer, so one ``send()``
carries it; whatever it leaves goes through ``sendall``.
"""

from typing import Any


def send_whole(sock: Any, data: bytes) -> None:
    """Send all of ``data`` (the socket's timeout applies to what is left)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def send_nonblock(sock: Any, data: bytes) -> None:
    """``send_whole`` without waiting for room in the send buffer (gunicorn's
    ``util.write_nonblock``): a client that reads nothing cannot hold the
    greenlet; the error ends its connection instead."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        send_whole(sock, data)
    finally:
        sock.settimeout(timeout)
