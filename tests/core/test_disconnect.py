import socket
import struct

import pytest

from project.core.disconnect import INTERIM, client_disconnect, client_gone_at_once


@pytest.fixture
def connection():
    """A loopback TCP connection: (the server's side, the client's side)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def test_a_half_closed_client_is_not_gone_and_is_sent_the_interim_answer(connection):
    """A client that only stopped sending is still there, and reads a 103."""
    server, client = connection
    client.shutdown(socket.SHUT_WR)
    assert not client_gone_at_once(server, interim_allowed=True)
    assert client.recv(100) == INTERIM


def test_a_client_that_closed_is_gone(connection):
    """A client that closed entirely resets the interim answer: gone."""
    server, client = connection
    client.close()
    assert client_gone_at_once(server, interim_allowed=True)


def test_a_reset_is_gone_whatever_the_protocol(connection):
    """A reset needs no interim answer to be read as leaving."""
    server, client = connection
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert client_gone_at_once(server, interim_allowed=False)


def test_http_1_0_end_of_file_is_taken_as_still_reading(connection):
    """No interim answer may go to an HTTP/1.0 client: it is not gone."""
    server, client = connection
    client.shutdown(socket.SHUT_WR)
    assert not client_gone_at_once(server, interim_allowed=False)
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)


def test_the_watch_tells_a_half_close_from_a_close(connection):
    """client_disconnect: a half-close leaves the event unset, the close after
    it sets it."""
    server, client = connection
    with client_disconnect(server) as gone:
        client.shutdown(socket.SHUT_WR)
        assert not gone.wait(0.2)
        assert client.recv(100) == INTERIM
        client.close()
        assert gone.wait(3)
