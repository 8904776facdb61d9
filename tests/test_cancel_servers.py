"""Cancellation on the wire: a client that hangs up, a view's timeout, shield(), SSE, shutdown."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .servers import (
    DELIVERY_SERVERS,
    SERVERS,
    Server,
    answered,
    get_or_error,
    in_background,
    running,
)

pytestmark = pytest.mark.server

#: Long enough that a request still in flight visibly holds the exit.
HOLDING_GRACE = 5.0
#: The grace of the shutdown tests, and how long the cancelled work may take to unwind.
GRACE, CANCEL = 1.0, 1.0
#: How soon a sync view that polls its token every 10 ms stops after the client hangs up.
SYNC_STOP_BOUND = 0.2
#: How soon an async view's cancellation (and its cleanup) follows the client hanging up.
ASYNC_STOP_BOUND = 0.2


@contextlib.contextmanager
def started(server: str, **graceful: float) -> Iterator[Server]:
    """``server`` running with these ``GRACEFUL`` settings, and started: Daphne starts
    the app at its first request."""
    with running(server, graceful=graceful) as srv:
        srv.get("/pid/")
        yield srv


def open_get(srv: Server, path: str) -> socket.socket:
    """A raw HTTP/1.1 GET whose response is left unread."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def hang_up(sock: socket.socket) -> float:
    """Close the TCP connection as a client that gives up does; when (wall clock, as events)."""
    now = time.time()
    sock.close()
    return now


def read_until(sock: socket.socket, needle: bytes, timeout: float = 5) -> bytes:
    """What the server sent, up to ``needle``; fails past ``timeout``."""
    deadline = time.monotonic() + timeout
    received = b""
    while needle not in received:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} within {timeout} s; got {received!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {needle!r}; got {received!r}"
        received += chunk
    return received


def read_to_end(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything until the server ends the connection, and when it did (monotonic)."""
    deadline = time.monotonic() + timeout
    received = b""
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"connection still open after {timeout} s; got {received!r}"
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic()


def wait_log(srv: Server, needle: str, timeout: float = 3) -> str:
    deadline = time.monotonic() + timeout
    while needle not in srv.log():
        assert time.monotonic() < deadline, (
            f"no {needle!r} in the log within {timeout} s:\n{srv.log()}"
        )
        time.sleep(0.02)
    return srv.log()


def stop_with_nothing_in_flight(srv: Server) -> None:
    """SIGTERM; the exit is not held by a request that should have ended already."""
    srv.signal()
    srv.wait_exit(HOLDING_GRACE + 5)
    log = srv.log()
    print(f"{srv.server}: exit {srv.exit_after:.2f} s after SIGTERM")
    assert srv.exit_after < HOLDING_GRACE - 0.5, log
    assert "hung at shutdown" not in log, log


# -- the views the tests hold in flight ------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A view held in flight: where it is, the event that says it began, the event (with
    its ``reason``) that says it stopped, and what else that view leaves behind."""

    path: str
    began: str
    stopped: str
    #: A sync view that polls its token (in the same token as the request's).
    sync: bool = False
    #: A ``@cancellable`` view: the name its "cancelled" log line gives.
    view: str | None = None
    #: The event its cleanup records, once, after the cancel.
    cleaned: str | None = None

    @property
    def bound(self) -> float:
        """How soon after the cancel the view has stopped."""
        return SYNC_STOP_BOUND if self.sync else ASYNC_STOP_BOUND

    def logged(self, reason: str) -> str:
        """The start of the line a ``@cancellable`` view's cancel logs."""
        return f"view {self.view} (GET {self.path}) cancelled: {reason} after"


HELD = [
    pytest.param(
        Held("/guarded/", "guarded-begin", "cleanup", view="tests.project.views.guarded"),
        id="cancellable",
    ),
    pytest.param(
        Held("/slow/?s=600", "slow-begin", "slow-cancelled", cleaned="slow-cleanup"),
        id="undecorated",
    ),
    pytest.param(
        Held("/export/?rows=100000", "export-begin", "export-stopped", sync=True),
        id="sync-polling",
    ),
]


def wait_began(srv: Server, held: Held) -> None:
    """Until ``held`` runs (a sync one well into its loop)."""
    began = srv.wait_event(held.began)[0]
    if held.sync:
        assert began["same_token"] is True
        time.sleep(0.1)  # well into its loop


# -- the client hangs up ----------------------------------------------------------------


@pytest.mark.parametrize("held", HELD)
@pytest.mark.parametrize("server", SERVERS)
def test_a_client_that_hangs_up_stops_the_view_with_reason_disconnect_once(
    server: str, held: Held
) -> None:
    with started(server, GRACE_PERIOD=HOLDING_GRACE) as srv:
        sock = open_get(srv, held.path)
        wait_began(srv, held)
        left = hang_up(sock)
        stopped = srv.wait_event(held.stopped, timeout=5)[0]
        assert stopped["reason"] == "disconnect"  # request.cancellation knew why
        latency = stopped["t"] - left
        print(f"{server}: hang-up -> {held.stopped} {latency * 1000:.0f} ms")
        assert 0 <= latency < held.bound, latency
        if held.view is not None:
            wait_log(srv, held.logged("disconnect"))
        if held.cleaned is not None:
            srv.wait_event(held.cleaned)
        stop_with_nothing_in_flight(srv)
        assert [s["reason"] for s in srv.events(held.stopped)] == ["disconnect"]  # once


@pytest.mark.parametrize("server", DELIVERY_SERVERS)
def test_shield_finishes_its_body_despite_a_hang_up_then_delivers_the_cancel(server: str) -> None:
    body = 0.5
    with started(server, GRACE_PERIOD=HOLDING_GRACE) as srv:
        sock = open_get(srv, f"/shielded/?body={body}&t=3")
        begin = srv.wait_event("shield-begin")[0]
        left = hang_up(sock)
        committed = srv.wait_event("committed", timeout=5)[0]
        assert committed["reason"] == "disconnect"  # the token knew during the block
        assert committed["t"] - begin["t"] >= body - 0.02  # the block ran to its end
        assert committed["t"] > left
        cancelled = srv.wait_event("shield-cancelled", timeout=5)[0]
        assert 0 <= cancelled["t"] - committed["t"] < ASYNC_STOP_BOUND  # held, then delivered
        stop_with_nothing_in_flight(srv)


@pytest.mark.parametrize("server", DELIVERY_SERVERS)
def test_a_shield_that_overruns_its_timeout_is_cancelled_after_a_hang_up(server: str) -> None:
    shield_timeout = 0.3
    with started(server, GRACE_PERIOD=HOLDING_GRACE) as srv:
        sock = open_get(srv, f"/shielded/?body=600&t={shield_timeout}")
        begin = srv.wait_event("shield-begin")[0]
        hang_up(sock)
        cancelled = srv.wait_event("shield-cancelled", timeout=5)[0]
        assert shield_timeout <= cancelled["t"] - begin["t"] < shield_timeout + 0.5
        assert srv.events("committed") == []  # the block itself was cut off
        wait_log(srv, f"ran past its {shield_timeout:g} s: cancelling it")
        stop_with_nothing_in_flight(srv)


@pytest.mark.parametrize("server", SERVERS)
def test_an_event_stream_closes_its_generator_when_the_client_hangs_up(server: str) -> None:
    with started(server, GRACE_PERIOD=HOLDING_GRACE) as srv:
        sock = open_get(srv, "/events/")
        received = read_until(sock, b"data: tick 2")
        assert received.startswith(b"HTTP/1.1 200")
        left = hang_up(sock)
        closed = srv.wait_event("sse-closed", timeout=5)[0]
        latency = closed["t"] - left
        print(f"{server}: hang-up -> SSE generator closed {latency * 1000:.0f} ms")
        assert 0 <= latency < ASYNC_STOP_BOUND, latency
        assert closed["ticks"] >= 2
        stop_with_nothing_in_flight(srv)
        assert len(srv.events("sse-closed")) == 1


# -- the view's own timeout -------------------------------------------------------------


@pytest.mark.parametrize("server", DELIVERY_SERVERS)
def test_a_view_timeout_answers_504_with_reason_timeout(server: str) -> None:
    with running(server) as srv, srv.client() as client:  # one keep-alive connection
        assert client.get("/pid/").status_code == 200
        for path in ("/timed/", "/sync-timed/", "/class-timed/"):
            began = time.monotonic()
            response = client.get(path)
            took = time.monotonic() - began
            assert response.status_code == 504, (path, response.text)
            assert response.text == "Gateway Timeout: the view took too long.\n"
            assert 0.3 <= took < 1.5, (path, took)
            wait_log(srv, f"(GET {path}) cancelled: timeout after")
        log = srv.log()
        assert "view tests.project.views.timed (GET /timed/)" in log
        assert "view tests.project.views.sync_timed (GET /sync-timed/)" in log
        assert [c["reason"] for c in srv.events("cleanup")] == ["timeout"]  # /timed/'s, once
        assert client.get("/pid/").status_code == 200  # the connection serves on


def test_the_log_line_of_a_cancelled_class_based_view_names_the_class() -> None:
    # @method_decorator(cancellable(timeout=0.3), name="dispatch") on a view that does not
    # override dispatch(): the line must name SlowView, not Django's View.dispatch.
    with running("uvicorn") as srv:
        assert srv.get("/class-timed/").status_code == 504
        log = wait_log(srv, "(GET /class-timed/) cancelled: timeout after")
        named = re.search(r"view (\S+) \(GET /class-timed/\) cancelled", log)
        assert named is not None
        assert named[1] in ("tests.project.views.SlowView", "tests.project.views.SlowView.dispatch")


# -- the server shuts down past the grace -----------------------------------------------


def assert_after_the_grace(srv: Server, at: float) -> None:
    """``at`` (an event's wall-clock time) came when the grace after the signal ended."""
    assert srv.signalled_at is not None
    signalled = time.time() - (time.monotonic() - srv.signalled_at)
    after = at - signalled
    assert GRACE <= after < GRACE + 0.6, (after, srv.events())


@pytest.mark.parametrize("held", HELD)
@pytest.mark.parametrize("server", SERVERS)
def test_shutdown_stops_a_view_at_the_end_of_the_grace_with_reason_shutdown_and_answers_503(
    server: str, held: Held
) -> None:
    with started(server, GRACE_PERIOD=GRACE, CANCEL_TIMEOUT=CANCEL) as srv:
        response = in_background(get_or_error, srv, held.path)
        srv.wait_event(held.began)
        srv.signal()
        srv.wait_exit(GRACE + CANCEL + 5)
        log = srv.log()
        assert srv.exit_after < GRACE + CANCEL + 1, log
        stopped = srv.events(held.stopped)
        assert [s["reason"] for s in stopped] == ["shutdown"], log
        assert_after_the_grace(srv, stopped[0]["t"])
        if held.view is not None:
            assert held.logged("shutdown") in log
        if held.cleaned is not None:
            assert len(srv.events(held.cleaned)) == 1
        assert "hung at shutdown" not in log, log
        assert answered(response, 503, log).headers["connection"] == "close"


@pytest.mark.parametrize("server", SERVERS)
def test_shutdown_streams_an_event_stream_opted_out_through_the_grace_then_closes_it(
    server: str,
) -> None:
    """``endless(response, False)``: the stream runs through the grace like any request in
    flight (an endless one ends when CLOSING begins: tests/test_streams_servers.py)."""
    with started(server, GRACE_PERIOD=GRACE, CANCEL_TIMEOUT=CANCEL) as srv:
        sock = open_get(srv, "/stream/?kind=sse-kept&tick=0.05")
        try:
            before = read_until(sock, b"data: 0")
            srv.signal()
            assert srv.signalled_at is not None
            rest, ended = read_to_end(sock, GRACE + CANCEL + 5)
        finally:
            sock.close()
        srv.wait_exit(GRACE + CANCEL + 5)
        log = srv.log()
        # The client saw ticks all through the grace (one per 0.05 s), then the stream ended.
        assert before.startswith(b"HTTP/1.1 200")
        assert rest.count(b"data: ") >= GRACE / 0.05 / 4, rest
        assert GRACE <= ended - srv.signalled_at < GRACE + CANCEL + 1, log
        closed = srv.events("stream-closed")
        assert len(closed) == 1, log
        assert_after_the_grace(srv, closed[0]["t"])
        assert srv.exit_after < GRACE + CANCEL + 1, log
        assert "hung at shutdown" not in log, log


@pytest.mark.parametrize("server", DELIVERY_SERVERS)
def test_shutdown_lets_a_shielded_block_finish_past_the_grace_then_cancels(server: str) -> None:
    body = 2.0  # ends a second after the grace: the shutdown cancel is held meanwhile
    with started(server, GRACE_PERIOD=GRACE, CANCEL_TIMEOUT=2.0) as srv:
        response = in_background(get_or_error, srv, f"/shielded/?body={body}&t=5")
        begin = srv.wait_event("shield-begin")[0]
        srv.signal()
        srv.wait_exit(GRACE + 2.0 + 5)
        log = srv.log()
        committed = srv.events("committed")
        assert [c["reason"] for c in committed] == ["shutdown"], log  # known, but held
        assert committed[0]["t"] - begin["t"] >= body - 0.02
        cancelled = srv.events("shield-cancelled")
        assert len(cancelled) == 1, log
        assert 0 <= cancelled[0]["t"] - committed[0]["t"] < ASYNC_STOP_BOUND, log
        assert srv.exit_after < GRACE + 2.0 + 2, log  # its phases, and the stop's end
        assert "hung at shutdown" not in log, log
        answered(response, 503, log)


@pytest.mark.parametrize("server", SERVERS)
def test_a_client_that_hangs_up_during_the_grace_is_cancelled_at_once_and_ends_the_drain(
    server: str,
) -> None:
    with started(server, GRACE_PERIOD=HOLDING_GRACE) as srv:
        sock = open_get(srv, "/guarded/")
        srv.wait_event("guarded-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        time.sleep(0.2)  # well into CLOSING
        left = hang_up(sock)
        cleanup = srv.wait_event("cleanup", timeout=5)[0]
        assert cleanup["reason"] == "disconnect"
        assert 0 <= cleanup["t"] - left < ASYNC_STOP_BOUND
        srv.wait_exit(HOLDING_GRACE + 5)
        log = srv.log()
        assert srv.exit_after < HOLDING_GRACE - 0.5, log  # the drain ended with its last request
        assert len(srv.events("cleanup")) == 1, log
