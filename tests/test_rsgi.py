"""GracefulASGI over RSGI in-process: the bridge's details against a stand-in for Granian's
protocol objects (the real Granian proves the same on the wire: ``granian-rsgi`` in the
server tests).

The stand-in keeps what the bridge must cope with in Granian 2.x: futures that take a
single done-callback, a streamed body that ends with an empty chunk, a transport that
raises ``RuntimeError`` (Granian's ``RSGIProtocolClosed``) once the client is gone, and
``client_disconnect()`` that resolves only when the client leaves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from django_graceful._core.lifecycle import Lifecycle, StartupFailed
from django_graceful._serving import rsgi
from django_graceful._serving.handler import GracefulASGIHandler
from django_graceful.asgi import GracefulASGI

from .inprocess import NO_SIGNALS, Events
from .project import views

TIMEOUT = 5
DOWNLOAD_PATH = os.path.abspath(views.DOWNLOAD)
DOWNLOAD_SIZE = os.path.getsize(views.DOWNLOAD)


class GranianFuture:
    """A Granian future-like: awaitable, one done-callback slot, cancellable."""

    def __init__(self) -> None:
        self._future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._callbacks = 0

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks += 1
        assert self._callbacks == 1, "Granian's futures take a single done-callback"
        self._future.add_done_callback(lambda _: callback(self))

    def result(self) -> Any:
        return self._future.result()

    def cancel(self) -> bool:
        return self._future.cancel()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def resolve(self, value: Any = None) -> None:
        if not self._future.done():
            self._future.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)

    def __await__(self) -> Any:
        return self._future.__await__()


class Headers(dict[str, str]):
    """RSGI headers: a mapping of lower-case names."""


class Scope:
    def __init__(self, proto: str, path: str, method: str = "GET", **headers: str) -> None:
        self.proto = proto
        self.http_version = "1.1"
        self.method = method
        self.scheme = "http"
        self.path, _, self.query_string = path.partition("?")
        self.headers = Headers({"host": "testserver", **headers})
        self.client = "127.0.0.1:5000"
        self.server = "[::1]:8000"


class Closed(RuntimeError):
    """Granian's RSGIProtocolClosed."""


class Stream:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.client_left = False

    def send_bytes(self, data: bytes) -> GranianFuture:
        future = GranianFuture()
        if self.client_left:
            future.fail(Closed("RSGI transport is closed"))
        else:
            self.parts.append(data)
            future.resolve()
        return future


class HTTPProto:
    """Granian's RSGIHTTPProtocol for one request."""

    def __init__(self, chunks: list[bytes] | None = None) -> None:
        self._chunks = list(chunks or [])
        self.reads = 0
        self.response: tuple[Any, ...] | None = None
        self.stream: Stream | None = None
        self.watchers: list[GranianFuture] = []
        self.answered = asyncio.Event()

    def __call__(self) -> GranianFuture:
        self.reads += 1
        future = GranianFuture()
        future.resolve(b"".join(self._chunks))
        return future

    def __aiter__(self) -> HTTPProto:
        return self

    def __anext__(self) -> GranianFuture:
        self.reads += 1
        future = GranianFuture()
        future.resolve(self._chunks.pop(0) if self._chunks else b"")
        return future

    def client_disconnect(self) -> GranianFuture:
        watcher = GranianFuture()
        self.watchers.append(watcher)
        return watcher

    def leave(self) -> None:
        for watcher in self.watchers:
            watcher.resolve()
        if self.stream is not None:
            self.stream.client_left = True

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.response = ("bytes", status, headers, body)
        self.answered.set()

    def response_file(self, status: int, headers: list[tuple[str, str]], path: str) -> None:
        self.response = ("file", status, headers, path)
        self.answered.set()

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Stream:
        self.stream = Stream()
        self.response = ("stream", status, headers, self.stream)
        self.answered.set()
        return self.stream


class Message:
    def __init__(self, kind: int, data: Any = None) -> None:
        self.kind = kind
        self.data = data


class WSTransport:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Any] = []

    def receive(self) -> GranianFuture:
        future = GranianFuture()
        task = asyncio.ensure_future(self.incoming.get())
        task.add_done_callback(lambda t: future.resolve(t.result()) if not t.cancelled() else None)
        return future

    def send_str(self, data: str) -> GranianFuture:
        self.sent.append(data)
        future = GranianFuture()
        future.resolve()
        return future

    def send_bytes(self, data: bytes) -> GranianFuture:
        return self.send_str(data)  # type: ignore[arg-type]


class WSProto:
    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.closed_with: int | None = None
        self.accepted = asyncio.Event()

    async def accept(self) -> WSTransport:
        self.transport = WSTransport()
        self.accepted.set()
        return self.transport

    def close(self, status: int | None = None) -> None:
        self.closed_with = status


# -- apps ------------------------------------------------------------------------------


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request body, and what the scope said, in one part."""
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message["body"]
        if not message["more_body"]:
            break
    said = f"{scope['path']}|{scope['query_string'].decode()}|{scope['client']}|{scope['server']}"
    await send(
        {"type": "http.response.start", "status": 201, "headers": [(b"x-said", said.encode())]}
    )
    await send({"type": "http.response.body", "body": body})


def streaming(parts: int, seen: list[Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(parts):
            await send({"type": "http.response.body", "body": b"part %d" % n, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        seen.append(await receive())

    return app


@pytest.fixture
def no_signals(settings: Any) -> None:
    settings.GRACEFUL = NO_SIGNALS


def graceful(app: Any, lifecycle: Lifecycle) -> GracefulASGI:
    return GracefulASGI(app, lifecycle=lifecycle)


# -- HTTP ------------------------------------------------------------------------------


async def test_a_request_without_a_body_reads_none_and_is_answered_in_one_call(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = HTTPProto()
    await asyncio.wait_for(
        graceful(echo, lifecycle).__rsgi__(Scope("http", "/a b/?q=1"), proto), TIMEOUT
    )
    assert proto.reads == 0
    assert proto.response is not None
    kind, status, headers, body = proto.response
    assert (kind, status, body) == ("bytes", 201, b"")
    assert ("x-said", "/a b/|q=1|('127.0.0.1', 5000)|('::1', 8000)") in headers


async def test_a_small_body_is_read_in_one_call(lifecycle: Lifecycle, no_signals: None) -> None:
    proto = HTTPProto([b"hello ", b"world"])
    scope = Scope("http", "/", "POST", **{"content-length": "11"})
    await asyncio.wait_for(graceful(echo, lifecycle).__rsgi__(scope, proto), TIMEOUT)
    assert proto.reads == 1
    assert proto.response is not None and proto.response[3] == b"hello world"


async def test_a_chunked_or_large_body_is_streamed_chunk_by_chunk(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    chunks = [b"a" * 1000, b"b" * 1000, b"c"]
    for headers in (
        {"transfer-encoding": "chunked"},
        {"content-length": str(rsgi.WHOLE_BODY_LIMIT + 1)},
    ):
        proto = HTTPProto(chunks)
        scope = Scope("http", "/", "POST", **headers)
        await asyncio.wait_for(graceful(echo, lifecycle).__rsgi__(scope, proto), TIMEOUT)
        assert proto.reads == 4  # three chunks, then the empty one that ends the body
        assert proto.response is not None and proto.response[3] == b"".join(chunks)


async def test_a_response_in_parts_is_streamed_and_the_client_stays(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = HTTPProto()
    seen: list[Any] = []
    app = graceful(streaming(3, seen), lifecycle)
    task = asyncio.ensure_future(app.__rsgi__(Scope("http", "/"), proto))
    await asyncio.wait_for(proto.answered.wait(), TIMEOUT)
    assert proto.stream is not None
    await asyncio.sleep(0.05)
    assert proto.stream.parts == [b"part 0", b"part 1", b"part 2"]
    assert not task.done()  # the app waits in receive(): the client is still there
    proto.leave()
    await asyncio.wait_for(task, TIMEOUT)
    assert seen == [{"type": "http.disconnect"}]


async def test_a_client_that_leaves_during_a_streamed_response_is_a_disconnect(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    # Django listens for the disconnect while it streams (SSE): a part that could not be
    # sent must end that wait, and later parts go nowhere (as on Uvicorn).
    proto = HTTPProto()
    got: list[Any] = []

    async def sse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        listener = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        assert proto.stream is not None
        proto.stream.client_left = True  # the stream's receiver is gone, no watcher told
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        got.append(await asyncio.wait_for(listener, TIMEOUT))
        await send({"type": "http.response.body", "body": b"after", "more_body": True})

    await asyncio.wait_for(graceful(sse, lifecycle).__rsgi__(Scope("http", "/"), proto), TIMEOUT)
    assert got == [{"type": "http.disconnect"}]
    assert proto.stream is not None and proto.stream.parts == [b"tick"]


async def test_a_stream_the_app_leaves_unfinished_ends_when_the_app_does(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    # An SSE view cancelled at shutdown never sends its last part; Granian ends the
    # response only once its transport is freed, so the bridge must let go of it.
    freed = asyncio.Event()

    class Proto(HTTPProto):
        def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Stream:
            stream = Stream()
            weakref.finalize(stream, freed.set)
            self.answered.set()
            return stream  # held by the bridge alone, as in Granian

    async def cut_short(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        raise asyncio.CancelledError("the shutdown's cancel")

    gc.disable()
    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(
                graceful(cut_short, lifecycle).__rsgi__(Scope("http", "/"), Proto()), TIMEOUT
            )
        assert freed.is_set()
    finally:
        gc.enable()


async def test_the_disconnect_watcher_is_cancelled_once_the_app_stops_listening(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = HTTPProto()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        listener = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        listener.cancel()  # what Django does once the response is out
        with pytest.raises(asyncio.CancelledError):
            await listener

    await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(Scope("http", "/"), proto), TIMEOUT)
    assert len(proto.watchers) == 1 and proto.watchers[0].cancelled()


async def test_a_body_cut_by_the_client_is_a_disconnect_not_a_short_body(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    class CutProto(HTTPProto):
        def __call__(self) -> GranianFuture:
            future = GranianFuture()
            future.fail(Closed("RSGI transport is closed"))
            return future

    proto = CutProto()
    got: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        got.append(await receive())

    scope = Scope("http", "/", "POST", **{"content-length": "10"})
    await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(scope, proto), TIMEOUT)
    assert got == [{"type": "http.disconnect"}]


async def test_a_path_sent_is_a_file_response(lifecycle: Lifecycle, no_signals: None) -> None:
    proto = HTTPProto()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(Scope("http", "/"), proto), TIMEOUT)
    assert proto.response == ("file", 200, [], "/etc/hostname")


async def test_django_answers_over_rsgi_with_the_lifespan_state(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    app = graceful(GracefulASGIHandler(), lifecycle)
    proto = HTTPProto()
    await asyncio.wait_for(app.__rsgi__(Scope("http", "/state/"), proto), TIMEOUT)
    assert proto.response is not None
    kind, status, headers, body = proto.response
    assert (kind, status) == ("bytes", 200)
    assert b'"pool": "pool-of-' in body
    assert ("content-type", "application/json") in [(k.lower(), v) for k, v in headers]


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_a_file_response_goes_by_its_path_and_an_encoded_one_through_python(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    # Granian's RSGI stream has no backpressure: a file streamed through Python to a slow
    # client would sit in memory whole. By its path, Granian reads it itself.
    app = graceful(GracefulASGIHandler(), lifecycle)
    proto = HTTPProto()
    await asyncio.wait_for(app.__rsgi__(Scope("http", "/download/"), proto), TIMEOUT)
    assert proto.response is not None
    kind, status, headers, path = proto.response
    assert (kind, status, path) == ("file", 200, DOWNLOAD_PATH)
    named = {k.lower(): v for k, v in headers}
    assert named["content-length"] == str(DOWNLOAD_SIZE)
    assert named["content-disposition"].startswith("attachment")
    # A middleware changed the bytes (Content-Encoding): they go through Python.
    proto = HTTPProto()
    await asyncio.wait_for(app.__rsgi__(Scope("http", "/download/?gzip=1"), proto), TIMEOUT)
    assert proto.response is not None and proto.response[0] == "stream"
    assert proto.stream is not None and len(b"".join(proto.stream.parts)) == DOWNLOAD_SIZE


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "before http.response.start"),
        ([{"type": "http.response.start", "status": 200}] * 2, "start sent twice"),
        ([{"type": "websocket.accept"}], "unexpected ASGI message 'websocket.accept'"),
    ],
)
async def test_messages_out_of_order_are_a_clear_error(
    lifecycle: Lifecycle, no_signals: None, messages: list[dict[str, Any]], error: str
) -> None:
    proto = HTTPProto()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    with pytest.raises(RuntimeError, match=error):
        await asyncio.wait_for(
            graceful(app, lifecycle).__rsgi__(Scope("http", "/"), proto), TIMEOUT
        )
    assert proto.response is None  # Granian answers 500 for an app that raised


async def test_two_arguments_with_an_rsgi_scope_are_served_as_rsgi(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = HTTPProto()
    await asyncio.wait_for(graceful(echo, lifecycle)(Scope("http", "/"), proto), TIMEOUT)  # type: ignore[arg-type]
    assert proto.response is not None and proto.response[1] == 201


# -- websockets ------------------------------------------------------------------------


async def test_a_websocket_connects_talks_and_hears_the_client_leave(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = WSProto()
    got: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket" and scope["subprotocols"] == ["a", "b"]
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            got.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send(
                {"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}}
            )

    scope = Scope("ws", "/ws/", **{"sec-websocket-protocol": "a, b"})
    task = asyncio.ensure_future(graceful(app, lifecycle).__rsgi__(scope, proto))
    await asyncio.wait_for(proto.accepted.wait(), TIMEOUT)
    assert proto.transport is not None
    proto.transport.incoming.put_nowait(Message(rsgi._WS_TEXT, "hi"))
    proto.transport.incoming.put_nowait(Message(rsgi._WS_BYTES, b"\x00"))
    proto.transport.incoming.put_nowait(Message(rsgi._WS_CLOSE))
    await asyncio.wait_for(task, TIMEOUT)
    assert got == [
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.receive", "bytes": b"\x00"},
        {"type": "websocket.disconnect", "code": rsgi.WS_NO_STATUS},
    ]
    assert proto.transport.sent == ["hi", b"\x00"]


async def test_a_websocket_refused_before_accept_gets_403(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = WSProto()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4003})
        assert await receive() == {"type": "websocket.disconnect", "code": 4003}

    await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(Scope("ws", "/"), proto), TIMEOUT)
    assert proto.closed_with == rsgi.WS_DENIED and proto.transport is None


async def test_a_close_while_the_app_waits_for_a_message_ends_that_wait(
    lifecycle: Lifecycle, no_signals: None, caplog: pytest.LogCaptureFixture
) -> None:
    # What the shutdown does: a close frame, then the app's receive() must return.
    proto = WSProto()
    got: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "a"})
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        await send({"type": "websocket.close", "code": 4000})
        got.append(await asyncio.wait_for(waiting, TIMEOUT))

    rsgi._warned.clear()
    with caplog.at_level(logging.WARNING, "django_graceful"):
        await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(Scope("ws", "/"), proto), TIMEOUT)
    assert got == [{"type": "websocket.disconnect", "code": 4000}]
    assert proto.closed_with == 4000
    assert "client sees 1005, not 4000" in caplog.text
    assert "without a subprotocol or headers" in caplog.text


async def test_the_close_frame_leaves_when_the_app_closes_not_at_the_next_collection(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    # Granian sends the close frame once its transport object is freed: the bridge must
    # not keep it (in a reference cycle only the garbage collector would break).
    proto = WSProto()
    freed = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert proto.transport is not None
        weakref.finalize(proto.transport, freed.set)
        proto.transport = None  # only the bridge holds it now, as in Granian
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        await send({"type": "websocket.close", "code": 1000})
        await waiting

    gc.disable()
    try:
        await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(Scope("ws", "/"), proto), TIMEOUT)
        assert freed.is_set()
    finally:
        gc.enable()


async def test_receive_before_the_accept_waits_for_it(
    lifecycle: Lifecycle, no_signals: None
) -> None:
    proto = WSProto()
    order: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        order.append("accept")
        await send({"type": "websocket.accept"})
        assert proto.transport is not None
        proto.transport.incoming.put_nowait(Message(rsgi._WS_TEXT, "first"))
        order.append((await asyncio.wait_for(waiting, TIMEOUT))["text"])

    await asyncio.wait_for(graceful(app, lifecycle).__rsgi__(Scope("ws", "/"), proto), TIMEOUT)
    assert order == ["accept", "first"]


# -- startup and shutdown --------------------------------------------------------------


def test_rsgi_init_and_del_run_the_startup_and_the_shutdown(
    lifecycle: Lifecycle, no_signals: None, recorded: Events
) -> None:
    app = graceful(GracefulASGIHandler(), lifecycle)
    loop = asyncio.new_event_loop()
    try:
        app.__rsgi_init__(loop)
        assert len(recorded("startup")) == 1
        assert lifecycle.state["pool"].startswith("pool-of-")
        proto = HTTPProto()
        loop.run_until_complete(
            asyncio.wait_for(app.__rsgi__(Scope("http", "/state/"), proto), TIMEOUT)
        )
        assert proto.response is not None and proto.response[1] == 200
        assert len(recorded("startup")) == 1  # no second, lazy startup
        app.__rsgi_del__(loop)
        assert len(recorded("shutdown")) == 1
    finally:
        loop.close()


def test_a_failed_startup_raises_from_rsgi_init(lifecycle: Lifecycle, settings: Any) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "LIFESPAN": ["tests.project.lifespan.broken"]}
    app = graceful(GracefulASGIHandler(), lifecycle)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(StartupFailed, match="database unreachable"):
            app.__rsgi_init__(loop)
    finally:
        loop.close()
