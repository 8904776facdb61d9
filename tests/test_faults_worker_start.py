"""Under faults: a server stopped while its workers are still starting.

Where the parent process listens from the start (Gunicorn's arbiter, ``--workers N``),
the connections the kernel accepts for it while its workers run the startup wait in the
accept queue. A SIGTERM then must leave each of them a whole answer, or refuse them at
connect: never a reset.
"""

from __future__ import annotations

import socket

import pytest

from .servers import WORKER_SERVERS, Server, in_background

REQUEST = b"GET /pid/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def send_request(srv: Server) -> socket.socket | Exception:
    """A request on a new connection, sent (the kernel accepted the connection for the
    server), or the error (refused at connect)."""
    try:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
        sock.sendall(REQUEST)
    except OSError as exc:
        return exc
    return sock


def answer(sent: socket.socket | Exception) -> bytes | Exception:
    """All the server sent until it closed the connection, or the error."""
    if isinstance(sent, Exception):
        return sent
    chunks = []
    try:
        with sent:
            while chunk := sent.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        return exc
    return b"".join(chunks)


@pytest.mark.server
@pytest.mark.parametrize("server", WORKER_SERVERS)
def test_sigterm_while_the_workers_start_resets_no_queued_connection(server: str) -> None:
    app = "tests.project.asgi_slow_startup:application"  # a 1 s startup hook
    srv = Server(server, app=app, graceful={"GRACE_PERIOD": 2}, workers=2)
    try:
        srv.start(wait=False)
        srv.wait_event("slow-startup-begin", timeout=20)
        queued = [in_background(answer, send_request(srv)) for _ in range(4)]
        srv.signal()
        code = srv.wait_exit(15)
        log = srv.log()
        results = [future.result(timeout=5) for future in queued]
        for result in results:
            if isinstance(result, ConnectionRefusedError):
                continue
            assert isinstance(result, bytes), (results, log)
            assert result.startswith((b"HTTP/1.1 200", b"HTTP/1.1 503")), (results, log)
        assert code == 0, log
    finally:
        srv.kill()
