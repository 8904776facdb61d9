"""Websockets on the real servers: SIGTERM closes each with 1012 before the process exits."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .servers import SERVERS, Server, client_close_code, running

pytestmark = pytest.mark.server

CHANNELS_APP = "tests.project.asgi_channels:application"
#: The same on a server whose websocket sends complete a second after the client read them.
LATE_SEND_APP = "tests.project.asgi_channels_late_send:application"
REDIS = ("127.0.0.1", 6379)


@dataclass
class Closed:
    """What a client read after the signal, up to the server's close frame."""

    messages: list[str] = field(default_factory=list)
    code: int | None = None
    at: float | None = None
    error: str | None = None


def open_ws(srv: Server, path: str, stack: contextlib.ExitStack) -> ClientConnection:
    """A connected client that has had one echo (so the consumer runs)."""
    url = f"ws://127.0.0.1:{srv.port}{path}"
    ws = stack.enter_context(connect(url, open_timeout=10, close_timeout=2))
    if path.startswith("/ws/json/"):
        ws.send('"hi"')
        assert ws.recv(timeout=5) == '{"echo": "hi"}'
    else:
        ws.send("hi")
        assert ws.recv(timeout=5) == "echo:hi"
    return ws


def read_until_closed(ws: ClientConnection, timeout: float) -> Closed:
    closed = Closed()
    deadline = time.monotonic() + timeout
    try:
        while True:
            message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            closed.messages.append(str(message))
    except ConnectionClosed as exc:
        closed.at = time.monotonic()
        closed.code = exc.rcvd.code if exc.rcvd is not None else None
    except TimeoutError:
        closed.error = f"no close within {timeout} s"
    return closed


@contextlib.contextmanager
def readers(clients: dict[str, ClientConnection], timeout: float) -> Iterator[dict[str, Future]]:
    pool = ThreadPoolExecutor(len(clients))
    try:
        yield {name: pool.submit(read_until_closed, ws, timeout) for name, ws in clients.items()}
    finally:
        pool.shutdown(wait=True)


def disconnect_codes(srv: Server) -> dict[str, int]:
    return {e["consumer"]: e["code"] for e in srv.events("ws-disconnect")}


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_closes_every_websocket_with_its_code_before_the_exit(server: str) -> None:
    graceful = {"GRACE_PERIOD": 5, "CANCEL_TIMEOUT": 1}
    with running(server, app=CHANNELS_APP, graceful=graceful) as srv, contextlib.ExitStack() as s:
        clients = {
            "echo": open_ws(srv, "/ws/echo/", s),  # the mixin, its hook says "bye"
            "plain": open_ws(srv, "/ws/plain/", s),  # no mixin
            "json": open_ws(srv, "/ws/json/", s),  # the mixin, closed with 1001
            "sync": open_ws(srv, "/ws/sync/", s),  # a sync WebsocketConsumer with the mixin
        }
        srv.wait_event("ws-connect", count=4)
        with readers(clients, timeout=10) as read:
            srv.signal()
            srv.wait_exit(10)
            got = {name: future.result(timeout=10) for name, future in read.items()}
        assert srv.exited_at is not None
        for name, closed in got.items():
            assert closed.error is None, (name, closed, srv.log())
            assert closed.at is not None and closed.at < srv.exited_at, (name, closed)
        # Over RSGI every client reads 1005: Granian closes without the app's code.
        assert {name: c.code for name, c in got.items()} == {
            "echo": client_close_code(server, 1012),
            "plain": client_close_code(server, 1012),
            "json": client_close_code(server, 1001),
            "sync": client_close_code(server, 1012),
        }, srv.log()
        assert got["echo"].messages == ["bye"] and got["sync"].messages == ["bye"]
        assert got["json"].messages == ['{"bye": true}'] and got["plain"].messages == []
        assert disconnect_codes(srv) == {"echo": 1012, "plain": 1012, "json": 1001, "sync": 1012}
        assert sorted(e["consumer"] for e in srv.events("ws-shutting-down")) == [
            "echo",
            "json",
            "sync",
        ]
        # The websockets left at once: CLOSING did not wait out its 5 s.
        assert srv.exit_after < 3, srv.log()
        assert "took too long to shut down" not in srv.log()


@pytest.mark.parametrize("server", SERVERS)
def test_a_sync_consumers_goodbye_follows_a_send_still_in_flight_then_its_close_and_the_exit(
    server: str,
) -> None:
    """The shutdown begins while the server still completes the sync consumer's echo (a
    loaded machine: seen on Granian). Its plain ``def shutting_down()`` sends through
    ``async_to_sync``: on the server's loop its goodbye waits for that echo and follows
    it. (From a bare thread it ran on a loop of its own that nothing woke: the goodbye
    never came, the close never went out, and the worker never exited.)"""
    graceful = {"GRACE_PERIOD": 5, "CANCEL_TIMEOUT": 1}
    with running(server, app=LATE_SEND_APP, graceful=graceful) as srv, contextlib.ExitStack() as s:
        clients = {"sync": open_ws(srv, "/ws/sync/", s)}  # its echo's send not done yet
        with readers(clients, timeout=10) as read:
            srv.signal()
            srv.wait_exit(10)
            closed = read["sync"].result(timeout=10)
        assert closed.error is None and closed.messages == ["bye"], (closed, srv.log())
        assert closed.code == client_close_code(server, 1012), (closed, srv.log())
        assert closed.at is not None and srv.exited_at is not None and closed.at < srv.exited_at
        assert disconnect_codes(srv) == {"sync": 1012}, srv.log()
        assert "Traceback" not in srv.log()


@pytest.mark.parametrize("server", SERVERS)
def test_a_hanging_disconnect_still_gets_1012_at_once_and_the_exit_stays_in_budget(
    server: str,
) -> None:
    graceful = {"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 1}
    with running(server, app=CHANNELS_APP, graceful=graceful) as srv, contextlib.ExitStack() as s:
        clients = {"slow": open_ws(srv, "/ws/plain/?disconnect=600", s)}
        srv.wait_event("ws-connect")
        with readers(clients, timeout=10) as read:
            srv.signal()
            closed = read["slow"].result(timeout=10)
            srv.wait_exit(10)
        # 1005 over RSGI (no close code), but as soon: the close is what a client notices.
        assert closed.code == client_close_code(server, 1012), (closed, srv.log())
        assert closed.at is not None and srv.signalled_at is not None
        assert closed.at - srv.signalled_at < 0.8  # at CLOSING, not after the grace
        srv.wait_event("ws-disconnect-cancelled", timeout=1)
        assert 1 < srv.exit_after < 1 + 1 + 2, srv.log()


# -- a channels_redis group across two servers ------------------------------------------


def redis_listening() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    pytest.importorskip("channels_redis", reason="channels_redis is not installed")
    redis = pytest.importorskip("redis", reason="redis (from channels_redis) is not installed")
    if not redis_listening():
        pytest.skip("no Redis at 127.0.0.1:6379 (start one to test channels_redis groups)")
    prefix = f"graceful-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis(*REDIS)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def group_members(prefix: str) -> set[str]:
    import redis

    client = redis.Redis(*REDIS)
    try:
        return {m.decode() for m in client.zrange(f"{prefix}:group:broadcast", 0, -1)}
    finally:
        client.close()


def recv_text(ws: ClientConnection) -> Any:
    return ws.recv(timeout=5)


@pytest.mark.parametrize("server", SERVERS)
def test_a_redis_group_survives_a_member_closed_at_shutdown(server: str, redis_prefix: str) -> None:
    env = {"GRACEFUL_TEST_REDIS": "redis://127.0.0.1:6379/0"}
    env["GRACEFUL_TEST_REDIS_PREFIX"] = redis_prefix
    graceful = {"GRACE_PERIOD": 5, "CANCEL_TIMEOUT": 1}
    with (
        running(server, app=CHANNELS_APP, graceful=graceful, env=env) as leaving,
        running("uvicorn", app=CHANNELS_APP, graceful=graceful, env=env) as staying,
        contextlib.ExitStack() as stack,
    ):
        a = open_ws(leaving, "/ws/echo/", stack)
        b = open_ws(staying, "/ws/echo/", stack)
        channel_a = leaving.wait_event("ws-connect")[0]["channel"]
        channel_b = staying.wait_event("ws-connect")[0]["channel"]
        assert group_members(redis_prefix) == {channel_a, channel_b}
        b.send("broadcast:one")
        assert recv_text(a) == "broadcast:one" and recv_text(b) == "broadcast:one"

        with readers({"a": a}, timeout=10) as read:
            leaving.signal()
            closed = read["a"].result(timeout=10)
            leaving.wait_exit(10)
        # 1005 over RSGI: Granian closes without the code.
        assert closed.code == client_close_code(server, 1012), (closed, leaving.log())
        assert closed.messages == ["bye"], (closed, leaving.log())
        assert disconnect_codes(leaving) == {"echo": 1012}
        assert group_members(redis_prefix) == {channel_b}  # A's group_discard ran

        b.send("broadcast:two")
        assert recv_text(b) == "broadcast:two"
        b.close()
        staying.signal()
        staying.wait_exit(10)
        assert group_members(redis_prefix) == set()
