"""Under faults: slow clients at shutdown.

A client that trickles its request headers (slowloris) has no request in flight: the
server closes its connection once the shutdown reaches the server's own stop, and exits
within seconds, not at the end of the budget. Granian would wait for the headers until
its own header timeout (30 s); its driver closes such connections
(``quiet_connections``). A client that reads a large response slowly is not such a
connection: its response is written whole, within the budget (Daphne's reactor, stopped,
would drop what it had not written yet: its driver waits for it).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from .servers import SERVERS, Server, budget_of

pytestmark = pytest.mark.server

#: A budget long enough that waiting for it shows: grace 3 s, cancel 1 s, the hooks'.
PHASES = {"GRACE_PERIOD": 3, "CANCEL_TIMEOUT": 1, "HOOK_TIMEOUT": 0.5}
#: How many slow clients, and how often each sends one more header line.
CLIENTS = 20
TRICKLE = 0.2
#: Nothing is in flight: every server exits within this (the budget is over 6 s).
QUICK_EXIT = 3.0


class Trickling:
    """``count`` connections that each send a request line, then one header line every
    ``TRICKLE`` s, never the blank line that ends the headers; what each then read."""

    def __init__(self, port: int, count: int) -> None:
        self._stop = threading.Event()
        self._sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.read: list[bytes | None] = [None] * count
        self._threads = [
            threading.Thread(target=self._trickle, args=(n,), daemon=True) for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _trickle(self, n: int) -> None:
        sock = self._sockets[n]
        sock.settimeout(TRICKLE)
        received = b""
        try:
            sock.sendall(b"GET /pid/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            line = 0
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break  # closed by the server
                    received += chunk
                sock.sendall(b"X-Trickle-%d: y\r\n" % line)
                line += 1
        except OSError:  # reset by the server, or a write after it closed
            pass
        self.read[n] = received

    def closed_by_the_server(self, timeout: float) -> bool:
        """Whether every connection ended by the server's doing, within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for sock in self._sockets:
            sock.close()


@contextlib.contextmanager
def serving(server: str) -> Iterator[Server]:
    srv = Server(server, graceful=PHASES)
    try:
        srv.start()
        srv.get("/pid/")  # Daphne starts the app at its first request
        srv.wait_engaged()
        yield srv
    finally:
        srv.kill()


@pytest.mark.parametrize("server", SERVERS)
def test_clients_trickling_their_headers_are_closed_and_do_not_hold_the_exit(
    server: str,
) -> None:
    with serving(server) as srv:
        budget = budget_of(srv)
        assert budget > 2 * QUICK_EXIT
        slow = Trickling(srv.port, CLIENTS)
        try:
            time.sleep(3 * TRICKLE)  # every connection accepted, its headers begun
            srv.signal()
            code = srv.wait_exit(budget + 5)
            log = srv.log()
            assert srv.exit_after < QUICK_EXIT, log
            assert slow.closed_by_the_server(timeout=2), log
            # None got an answer: the server never had a whole request from them.
            assert all(not read.startswith(b"HTTP/1.1 200") for read in slow.read if read)
            assert "still waits for connections" not in log
            assert code in (0, -15), log  # Uvicorn re-raises SIGTERM
        finally:
            slow.close()


#: The slow reader's response, and how it reads it: slower than the server writes, so that
#: the server is still writing it well after the view returned and the shutdown began.
BULK_MB = 8
READ_CHUNK = 64 * 1024
READ_PAUSE = 0.02


def read_slowly(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes, ``READ_CHUNK`` at a time."""
    received = b""
    while chunk := sock.recv(READ_CHUNK):
        received += chunk
        time.sleep(READ_PAUSE)
    return received


@pytest.mark.parametrize("server", SERVERS)
def test_a_client_reading_a_large_response_slowly_gets_all_of_it(server: str) -> None:
    with serving(server) as srv:
        budget = budget_of(srv)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_CHUNK)
        sock.settimeout(budget + 5)
        with sock:
            sock.connect(("127.0.0.1", srv.port))
            request = f"GET /bulk/?mb={BULK_MB} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            sock.sendall(request.encode() + b"Connection: close\r\n\r\n")
            srv.wait_event("bulk-sent")  # the view returned; the server writes the body
            srv.signal()
            began = time.monotonic()
            received = read_slowly(sock)
        took = time.monotonic() - began
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert len(body) == BULK_MB * 2**20, (len(body), srv.log())
        assert took > 1.0  # still written well after the signal: the test shows something
        srv.wait_exit(budget + 5)
