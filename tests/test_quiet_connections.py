"""Accepted connections with nothing left to send (``_core/quiet_connections.py``), on real
sockets of this process: found by the ports they were accepted on, not while a response
waits in their send queue, and closed so that the client reads the end of the stream."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from django_graceful._core import quiet_connections

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc/self/fd and SIOCOUTQ are Linux's"
)


@contextlib.contextmanager
def accepted(listener: socket.socket) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client connection, and the server's side of it as ``listener`` accepted it."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    with client, server:
        yield client, server


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_the_listening_ports_are_found(listener: socket.socket) -> None:
    assert listener.getsockname()[1] in quiet_connections.listening_ports()


def test_a_connection_that_sent_a_partial_request_is_quiet_and_closed(
    listener: socket.socket,
) -> None:
    ports = {listener.getsockname()[1]}
    with accepted(listener) as (client, server):
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        found = quiet_connections.quiet(ports)
        assert inode(server) in found
        assert inode(client) not in found  # its local port is not a listening one
        assert quiet_connections.close({inode(server)}, ports) == 1
        client.settimeout(2)
        assert client.recv(100) == b""  # the end of the stream: closed by the server side
        assert server.fileno() >= 0  # shut down, not closed: the descriptor is its own


def test_a_connection_with_a_response_in_its_send_queue_is_not_quiet(
    listener: socket.socket,
) -> None:
    ports = {listener.getsockname()[1]}
    with accepted(listener) as (client, server):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # the client reads nothing: the send queue stays full
                server.send(b"x" * 65536)
        assert inode(server) not in quiet_connections.quiet(ports)
        assert quiet_connections.close({inode(server)}, ports) == 0


def test_connections_on_other_ports_are_left_alone(listener: socket.socket) -> None:
    with accepted(listener) as (_, server):
        assert quiet_connections.quiet({1}) == set()
        assert quiet_connections.close({inode(server)}, {1}) == 0
