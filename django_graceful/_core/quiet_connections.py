"""Connections this process accepted that have nothing left to send: found, and closed.

A server that stops gracefully waits for its open connections. One whose client never
sent a whole request (a slow client trickling its headers, or one that sends nothing)
holds that wait until the server's own header timeout, though no work is in flight on
it. Where nothing is in flight, a server's driver looks for such connections: the TCP
connections of this process whose local port is one its listening sockets had (looked
at while it served), in ``ESTABLISHED``, with an empty send queue (``SIOCOUTQ``: no
response is being flushed to a slow reader). A connection found quiet twice in a row is
closed with ``shutdown()`` on a duplicate of its descriptor: the server reads the end of
its stream and ends the connection itself; the descriptor stays the server's.

Imports nothing of django_graceful. Off Linux (no ``/proc/self/fd``) it finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
from collections.abc import Iterator

#: Linux's ``ioctl`` that gives the bytes in a TCP socket's send queue, not yet sent or
#: not yet acknowledged (``SIOCOUTQ`` in ``<linux/sockios.h>``, the value of ``TIOCOUTQ``).
SIOCOUTQ = 0x5411
#: ``struct tcp_info`` starts with the connection's state; ``TCP_ESTABLISHED`` is 1.
_ESTABLISHED = 1
_TCP_INFO_SIZE = 104


def listening_ports() -> set[int]:
    """The ports of this process's TCP listening sockets: where it accepts connections.
    Looked at while the server serves (a stopped server may have closed them)."""
    ports = set()
    for _, sock in _tcp_sockets():
        with sock, contextlib.suppress(OSError):
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                ports.add(sock.getsockname()[1])
    return ports


def quiet(ports: set[int]) -> set[int]:
    """The connections this process accepted on ``ports`` that have nothing left to send
    (and so no response in progress), by socket inode."""
    with _accepted(ports) as connections:
        return {inode for inode, sock in connections.items() if _nothing_to_send(sock)}


def close(inodes: set[int], ports: set[int]) -> int:
    """Shut down, both ways, those of the connections ``inodes`` that are still accepted
    connections on ``ports`` with nothing to send; how many were."""
    closed = 0
    with _accepted(ports) as connections:
        for inode, sock in connections.items():
            if inode in inodes and _nothing_to_send(sock):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    closed += 1
    return closed


@contextlib.contextmanager
def _accepted(ports: set[int]) -> Iterator[dict[int, socket.socket]]:
    """A duplicate of each established TCP connection of this process whose local port is
    one of ``ports``, by inode; closed again on leaving (the server's own descriptors stay
    open)."""
    accepted: dict[int, socket.socket] = {}
    try:
        for inode, sock in _tcp_sockets():
            try:
                keep = (
                    inode not in accepted
                    and _state(sock) == _ESTABLISHED
                    and sock.getsockname()[1] in ports
                )
            except OSError:
                keep = False
            if keep:
                accepted[inode] = sock
            else:
                sock.close()
        yield accepted
    finally:
        for sock in accepted.values():
            sock.close()


def _tcp_sockets() -> Iterator[tuple[int, socket.socket]]:
    """A duplicate of each TCP socket descriptor of this process, with its inode."""
    if not sys.platform.startswith("linux"):
        return
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
            if not link.startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):  # closed meanwhile, or not a socket after all
            continue
        # The descriptor may have been closed and reused between readlink() and dup().
        try:
            inode = os.fstat(sock.fileno()).st_ino
        except OSError:
            inode = -1
        if (
            link == f"socket:[{inode}]"
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
        ):
            yield inode, sock
        else:
            sock.close()


def _state(sock: socket.socket) -> int:
    """The TCP state of ``sock`` (``TCP_INFO``'s first byte)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)[0]


def _nothing_to_send(sock: socket.socket) -> bool:
    """Whether no byte waits in the socket's send queue (False if it cannot tell)."""
    import fcntl  # Unix only; reached on Linux only

    try:
        queued = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return False
    return struct.unpack("i", queued)[0] == 0
