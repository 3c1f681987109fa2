"""Answers written in one ``send()`` where they fit, whole where they do not."""

import socket

import gevent
import pytest
from gevent import socket as gsocket

from project.core.socket_send import send_nonblock, send_whole


class CountingSocket:
    """A gevent socket that counts the system calls made through it."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.calls: list[str] = []

    def send(self, data, *args):
        self.calls.append("send")
        return self._sock.send(data, *args)

    def sendall(self, data, *args):
        self.calls.append("sendall")
        return self._sock.sendall(data, *args)

    def gettimeout(self):
        return self._sock.gettimeout()

    def settimeout(self, value):
        self._sock.settimeout(value)


def _read_all(sock, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_a_small_answer_is_one_send():
    ours, theirs = gsocket.socketpair()
    counted = CountingSocket(ours)
    send_whole(counted, b"HTTP/1.1 200 OK\r\n\r\n{}")
    assert counted.calls == ["send"]
    assert theirs.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n{}"


def test_a_request_the_kernel_takes_in_part_is_sent_whole():
    """What one send() leaves is sent with sendall()."""

    class Sock:
        def __init__(self) -> None:
            self.sent = b""

        def send(self, data: bytes) -> int:
            self.sent += bytes(data[:5])
            return 5

        def sendall(self, data: bytes) -> None:
            self.sent += bytes(data)

    sock = Sock()
    send_whole(sock, b"GET / HTTP/1.1\r\n\r\n")
    assert sock.sent == b"GET / HTTP/1.1\r\n\r\n"


def test_an_answer_larger_than_the_buffer_arrives_whole():
    ours, theirs = gsocket.socketpair()
    data = bytes(range(256)) * 40_000  # 10 MB, far past any send buffer
    reader = gevent.spawn(_read_all, theirs, len(data))
    send_whole(ours, data)
    assert reader.get(timeout=10) == data


def test_a_refusal_never_waits_for_a_client_that_reads_nothing():
    ours, theirs = gsocket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with gevent.Timeout(2), pytest.raises(OSError):
        for _ in range(10_000):
            send_nonblock(ours, b"x" * 65536)
    assert ours.gettimeout() is None  # its timeout given back
