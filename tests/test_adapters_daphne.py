"""Daphne specifics on the real server: uploads at SIGTERM, stubborn requests, its own timeouts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .servers import (
    ROOT,
    Server,
    answered,
    get_or_error,
    in_background,
    start_with,
    stop_holding_a_stubborn_request,
)

pytestmark = pytest.mark.server

DAPHNE_KILL_LINE = "took too long to shut down"
#: What the end of a stop may take beyond its phases on a loaded machine (REPORTING, the
#: hung request's 503, Daphne's own stop): well below the watchdog's budget + 1 s.
STOP_SLACK = 5
DAPHNE_KILL_ALL_LINE = "pending application instances"  # "Killed N pending ..." of Daphne's trigger


def begin_upload(srv: Server, body: bytes, sent: int) -> socket.socket:
    """A POST whose headers are complete but whose body is only ``sent`` bytes in."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    head = f"POST /pid/ HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[:sent])
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or resets it)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_a_request_still_uploading_at_sigterm_does_not_cost_the_others_their_response() -> None:
    # Daphne's own trigger raises KeyError on a connection whose request is incomplete
    # (-v 2 shows it) and stops cancelling the rest.
    graceful = {"DRAIN_DELAY": 1, "GRACE_PERIOD": 5}
    srv = start_with(Server("daphne", graceful=graceful), "-v", "2")
    try:
        srv.get("/pid/")
        body = b"a" * 1000
        finishing = begin_upload(srv, body, 10)
        stalled = begin_upload(srv, body, 10)
        slow = in_background(get_or_error, srv, "/slow/?s=1.5&size=100000")
        srv.wait_event("slow-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        finishing.sendall(body[10:])  # completes while draining: served
        head = finishing.recv(65536)
        assert len(answered(slow, 200, timeout=10).content) == 100000
        assert head.startswith(b"HTTP/1.1 200"), head
        assert srv.wait_exit(15) == 0
        # The stalled upload is work in flight: the grace waits for it, as on every server.
        drain, grace = graceful["DRAIN_DELAY"], graceful["GRACE_PERIOD"]
        assert drain + grace < srv.exit_after < drain + grace + 1.5
        assert b"HTTP/" not in read_all(stalled)  # closed at exit, not left hanging
        log = srv.log()
        assert "KeyError" not in log and "Unhandled" not in log, log
        assert DAPHNE_KILL_ALL_LINE not in log
        assert len(srv.events("shutdown")) == 1
    finally:
        srv.kill()
        for sock in (locals().get("finishing"), locals().get("stalled")):
            if sock is not None:
                sock.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_request_that_swallows_every_cancel_gets_503_and_does_not_hold_the_exit(
    signum: int,
) -> None:
    # Daphne's own trigger waits for it forever; our watchdog would end it at budget + 1 s.
    grace, cancel = 1, 1
    srv = start_with(Server("daphne", graceful={"GRACE_PERIOD": grace, "CANCEL_TIMEOUT": cancel}))
    try:
        code, log, response = stop_holding_a_stubborn_request(srv, signum)
        assert code == 0, log
        # not held by the request (Daphne waits for it for ever), nor ended by the watchdog
        assert srv.exit_after < grace + cancel + STOP_SLACK, log
        assert len(srv.events("shutdown")) == len(srv.events("lifespan-exit")) == 1
        assert answered(response, 503, log).text == "Service is shutting down.\n"
    finally:
        srv.kill()


def test_a_request_cancelled_at_shutdown_gets_503_not_an_empty_reply() -> None:
    srv = start_with(Server("daphne", graceful={"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 1}))
    try:
        srv.get("/pid/")
        response = in_background(get_or_error, srv, "/slow/?s=600")
        srv.wait_event("slow-begin")
        srv.signal()
        assert answered(response, 503, timeout=10).headers["retry-after"] == "1"
        assert srv.events("slow-cleanup")
        assert srv.wait_exit(10) == 0
    finally:
        srv.kill()


def test_daphnes_close_timeout_does_not_kill_work_during_the_grace() -> None:
    # Daphne cancels an app that outlives its client by --application-close-timeout,
    # logging "took too long to shut down and was killed" every second, and naming no view.
    grace, cancel = 3, 1
    srv = Server("daphne", graceful={"GRACE_PERIOD": grace, "CANCEL_TIMEOUT": cancel})
    start_with(srv, "--application-close-timeout", "1")
    try:
        srv.get("/pid/")
        gave_up = get_or_error(srv, "/stubborn/", timeout=0.5)
        assert isinstance(gave_up, httpx.TimeoutException), gave_up
        srv.signal()
        assert srv.wait_exit(10) == 0
        log = srv.log()
        assert DAPHNE_KILL_LINE not in log, log
        assert "hung at shutdown: request GET /stubborn/" in log  # ours, with the view's stack
        assert "views.py" in log
        assert srv.exit_after < grace + cancel + STOP_SLACK
    finally:
        srv.kill()


def handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (its SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_sigterm_before_the_first_request_lets_daphne_stop_as_usual() -> None:
    # Nothing started (Daphne sends no lifespan), so nothing of ours is installed.
    srv = start_with(Server("daphne"))
    try:
        # Daphne listens before Twisted's reactor runs and takes SIGTERM: a signal in
        # between ends the process by default (-15), with or without django_graceful.
        assert srv.proc is not None
        deadline = time.monotonic() + 10
        while not handles(srv.proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handles(srv.proc.pid, signal.SIGTERM), "Twisted never took SIGTERM"
        srv.signal()
        assert srv.wait_exit(10) == 0
        assert srv.exit_after < 2
        assert srv.events("startup") == []
        assert "Traceback" not in srv.log()
    finally:
        srv.kill()


def test_when_daphne_stops_on_its_own_our_shutdown_still_drains_first() -> None:
    # HANDLE_SIGNALS off: Twisted's SIGTERM handler stops the reactor, and our trigger
    # runs the whole sequence before Daphne closes the connections.
    graceful = {"HANDLE_SIGNALS": False, "GRACE_PERIOD": 5}
    srv = start_with(Server("daphne", graceful=graceful))
    try:
        srv.get("/pid/")
        response = in_background(get_or_error, srv, "/slow/?s=1&size=100000")
        srv.wait_event("slow-begin")
        srv.signal()
        assert len(answered(response, 200, timeout=10).content) == 100000
        assert srv.wait_exit(10) == 0
        assert [e["trigger"] for e in srv.events("shutdown-started")] == ["reactor stop"]
        assert len(srv.events("shutdown")) == len(srv.events("lifespan-exit")) == 1
        assert DAPHNE_KILL_ALL_LINE not in srv.log()
    finally:
        srv.kill()


def test_the_adapter_stays_out_when_daphne_is_only_imported() -> None:
    # "daphne" in INSTALLED_APPS imports daphne.server (installing its reactor) under any
    # server; only a running reactor on this very loop means Daphne serves us.
    probe = (
        "import asyncio, sys, daphne.server\n"
        "from django_graceful.adapters import daphne\n"
        "async def main():\n"
        "    return daphne.running(sys.modules)\n"
        "print(daphne.running(sys.modules), asyncio.run(main()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == ["False", "False"], out.stderr
