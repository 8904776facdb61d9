"""RSGI, Granian's own interface, spoken to an ASGI app: each RSGI call becomes one ASGI
connection (a scope dict, a ``receive`` and a ``send``).

GracefulASGI serves RSGI through this bridge so that everything it does on the ASGI
servers (tracking, draining, 503s, cancels, websockets closed at shutdown) runs the same
way, and the wrapped app (Django's handler, a Channels router) stays an ASGI app.

HTTP: a request without a body is answered from memory (no call into Granian); a small
body is read in one call, a large or chunked one streamed chunk by chunk. A response
sent in one ``http.response.body`` goes out with one ``response_bytes`` call; one in
several parts is streamed (``response_stream``). After the body, ``receive()`` returns
``http.disconnect`` when the client leaves (``client_disconnect()``), or when a part of
a streamed response could not be sent because it left. Granian's futures take a single
done-callback, so they are never awaited directly: each resolves an asyncio future of
ours, which the bridge can also resolve itself.

Websockets: ``websocket.connect`` first, then Granian's messages. What RSGI cannot carry
is logged once per process and otherwise dropped: a subprotocol or headers chosen at
accept, a close code (Granian closes an accepted websocket without one: the client sees
1005), the body of a denial response. A client's close arrives without its code: the app
gets ``websocket.disconnect`` with 1005.

Imports nothing of Granian: the scope and protocol objects are duck-typed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from .protocol import WS_SERVICE_RESTART, Message

logger = logging.getLogger("django_graceful")

#: A body at most this long (by its Content-Length) is read in one call.
WHOLE_BODY_LIMIT = 64 * 1024
#: ASGI's ``http_version`` for RSGI's.
HTTP_VERSIONS = {"1": "1.0", "1.1": "1.1", "2": "2", "3": "3"}
#: What ``websocket.disconnect`` says when the client's close code is not known.
WS_NO_STATUS = 1005
#: ... and when the connection ended without a close frame.
WS_ABNORMAL = 1006
#: The status of a websocket handshake denied before it was accepted.
WS_DENIED = 403
#: Close codes whose loss is not worth a warning: the normal close, and the 1012 of a
#: shutdown (a client reconnects on any close).
QUIET_CLOSE_CODES = frozenset({1000, WS_SERVICE_RESTART})
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
#: RSGI websocket message kinds (granian.rsgi.WebsocketMessageType).
_WS_CLOSE, _WS_BYTES, _WS_TEXT = 0, 1, 2

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def address(value: str) -> tuple[str, int] | None:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) as ASGI's ``(host, port)``; None for
    what is not one (a Unix socket)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


#: The server's address is the same on every call: parsed once.
_server_address = functools.lru_cache(maxsize=16)(address)


def _headers(scope: Any) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()]


def _scope(kind: str, scheme: str, scope: Any) -> dict[str, Any]:
    """What an ASGI scope of ``kind`` says of the connection, from an RSGI scope."""
    return {
        "type": kind,
        "asgi": ASGI_VERSION,
        "http_version": HTTP_VERSIONS.get(scope.http_version, "1.1"),
        "scheme": scheme,
        "path": scope.path,
        "raw_path": None,
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": _headers(scope),
        "client": address(scope.client),
        "server": _server_address(scope.server),
    }


def http_scope(scope: Any) -> dict[str, Any]:
    """The ASGI scope of an RSGI HTTP scope."""
    asgi = _scope("http", scope.scheme, scope)
    asgi["method"] = scope.method
    asgi["extensions"] = {"http.response.pathsend": {}}
    return asgi


def websocket_scope(scope: Any) -> dict[str, Any]:
    """The ASGI scope of an RSGI websocket scope."""
    asgi = _scope("websocket", "wss" if scope.scheme == "https" else "ws", scope)
    protocols = scope.headers.get("sec-websocket-protocol")
    asgi["subprotocols"] = [p.strip() for p in protocols.split(",")] if protocols else []
    return asgi


def _settle(future: asyncio.Future[Any], result: Callable[[], Any]) -> None:
    """Resolve ``future`` with ``result()`` (or what it raised), unless it is done."""
    if future.done():
        return
    try:
        future.set_result(result())
    except asyncio.CancelledError:
        future.cancel()
    except Exception as exc:
        future.set_exception(exc)


def _pending(granian_future: Any, future: asyncio.Future[Any]) -> None:
    """Resolve our ``future`` from Granian's (which takes a single done-callback)."""
    granian_future.add_done_callback(lambda done: _settle(future, done.result))


#: Where an HTTP connection's request body stands.
_NO_BODY, _WHOLE, _STREAMED, _READ = range(4)


class HTTPConnection:
    """One RSGI HTTP call as an ASGI ``receive`` and ``send``."""

    __slots__ = ("_body", "_chunks", "_gone", "_headers", "_proto", "_status", "_stream", "left")

    def __init__(self, proto: Any, scope: Any) -> None:
        self._proto = proto
        headers = scope.headers
        length = headers.get("content-length")
        self._body = _NO_BODY
        if "transfer-encoding" in headers:
            self._body = _STREAMED
        elif length is not None and length.strip() not in ("", "0"):
            small = length.isdigit() and int(length) <= WHOLE_BODY_LIMIT
            self._body = _WHOLE if small else _STREAMED
        self._chunks: Any = None
        #: What the disconnect waits on, while one waits.
        self._gone: asyncio.Future[Any] | None = None
        #: The response's status, once ``http.response.start`` came.
        self._status: int | None = None
        self._headers: list[tuple[str, str]] = []
        self._stream: Any = None
        #: The client left (seen while reading the body or sending the response).
        self.left = False

    # -- receive ----------------------------------------------------------------------

    async def receive(self) -> Message:
        body = self._body
        if body == _READ:
            return await self._disconnected()
        if body == _STREAMED:
            return await self._next_chunk()
        self._body = _READ
        if body == _NO_BODY:
            return {"type": "http.request", "body": b"", "more_body": False}
        data = await self._granian(self._proto())
        if data is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": data, "more_body": False}

    async def _next_chunk(self) -> Message:
        if self._chunks is None:
            self._chunks = self._proto.__aiter__()
        try:
            chunk = await self._granian(self._chunks.__anext__())
        except StopAsyncIteration:
            chunk = b""
        if chunk is None:
            return {"type": "http.disconnect"}
        if not chunk:  # Granian ends the body with an empty chunk
            self._body = _READ
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def _granian(self, granian_future: Any) -> Any:
        """Await one of Granian's futures; None if the client left meanwhile."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        _pending(granian_future, future)
        try:
            return await future
        except asyncio.CancelledError:
            granian_future.cancel()
            raise
        except RuntimeError:  # RSGIProtocolClosed: the client left while it sent the body
            self._body = _READ
            self.left = True
            return None

    async def _disconnected(self) -> Message:
        if not self.left:
            self._gone = gone = asyncio.get_running_loop().create_future()
            watcher = self._proto.client_disconnect()
            _pending(watcher, gone)
            try:
                await gone
            finally:
                self._gone = None
                watcher.cancel()  # the spec leaves that to the app, once not needed
        return {"type": "http.disconnect"}

    def _client_left(self) -> None:
        self.left = True
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(None)

    # -- send ---------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.left:
            return  # as Uvicorn does once the client left: the app learns it from receive()
        if kind == "http.response.start":
            if self._status is not None:
                raise RuntimeError("ASGI http.response.start sent twice")
            self._status = message["status"]
            self._headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
            ]
        elif kind in ("http.response.body", "http.response.pathsend"):
            if self._status is None:
                raise RuntimeError(f"ASGI {kind} sent before http.response.start")
            if kind == "http.response.pathsend":
                self._proto.response_file(self._status, self._headers, message["path"])
            else:
                await self._send_body(message.get("body", b""), message.get("more_body", False))
        elif kind != "http.response.trailers":
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an HTTP response")

    async def _send_body(self, body: bytes, more: bool) -> None:
        if self._stream is None:
            if not more:
                self._proto.response_bytes(self._status, self._headers, body)
                return
            self._stream = self._proto.response_stream(self._status, self._headers)
        if body:
            try:
                await self._stream.send_bytes(body)
            except RuntimeError:  # RSGIProtocolClosed: the client left
                self._stream = None
                self._client_left()
                return
        if not more:
            self._stream = None  # the last reference to it: Granian ends the response

    def release(self) -> None:
        """The app returned (or raised, or was cancelled): a response it left unfinished
        ends now. Granian ends a streamed response once its transport is freed; RSGI has
        no other way, so the client sees a complete (if short) stream."""
        self._stream = None


class WebsocketConnection:
    """One RSGI websocket call as an ASGI ``receive`` and ``send``."""

    __slots__ = (
        "_closed",
        "_connected",
        "_proto",
        "_receiving",
        "_settled",
        "_transport",
        "_waiter",
    )

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self._connected = False
        self._transport: Any = None
        #: The code of the close we (or the app) sent; None while open.
        self._closed: int | None = None
        #: Set when the app accepted or closed: ends a receive() waiting for either.
        self._settled: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[Any] | None = None
        #: Granian's pending receive, while one is pending.
        self._receiving: Any = None

    async def receive(self) -> Message:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        if self._transport is None and self._closed is None:
            # ASGI lets the app wait here until it accepted (or closed).
            self._settled = settled = asyncio.get_running_loop().create_future()
            try:
                await settled
            finally:
                self._settled = None
        if self._closed is not None:
            return {"type": "websocket.disconnect", "code": self._closed}
        return await self._message()

    async def _message(self) -> Message:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        granian_future = self._receiving = self._transport.receive()
        _pending(granian_future, waiter)
        try:
            message = await waiter
        except asyncio.CancelledError:
            granian_future.cancel()
            raise
        except RuntimeError:  # the connection ended without a close frame
            return self._ended(WS_ABNORMAL)
        finally:
            self._waiter = self._receiving = None
        if isinstance(message, dict):  # resolved by our own close
            return message
        kind = message.kind
        if kind == _WS_TEXT:
            return {"type": "websocket.receive", "text": message.data}
        if kind == _WS_BYTES:
            return {"type": "websocket.receive", "bytes": message.data}
        return self._ended(WS_NO_STATUS)

    def _ended(self, code: int) -> Message:
        if self._closed is None:
            self._closed = code
        return {"type": "websocket.disconnect", "code": self._closed}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self._closed is not None:
            return  # closed already: a goodbye sent after the close goes nowhere
        if kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.send":
            if self._transport is None:
                await self._accept({})
            text = message.get("text")
            if text is not None:
                await self._transport_send(self._transport.send_str, text)
            else:
                await self._transport_send(self._transport.send_bytes, message.get("bytes") or b"")
        elif kind == "websocket.close":
            code = message.get("code", 1000)
            if self._transport is None:
                self._close(WS_DENIED, code)
            else:
                if code not in QUIET_CLOSE_CODES:
                    _warn_once(
                        "close-code",
                        "Granian's RSGI closes a websocket without a close code: the "
                        "client sees 1005, not %s (run Granian with --interface asgi "
                        "where clients depend on close codes)",
                        code,
                    )
                self._close(code, code)
        elif kind == "websocket.http.response.start":
            self._close(message.get("status", WS_DENIED), WS_DENIED)
        elif kind != "websocket.http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a websocket")

    async def _accept(self, message: Message) -> None:
        if message.get("subprotocol") or message.get("headers"):
            _warn_once(
                "accept",
                "Granian's RSGI accepts a websocket without a subprotocol or headers: "
                "the ones the app chose are not sent (run Granian with --interface asgi "
                "where clients need them)",
            )
        self._transport = await self._proto.accept()
        self._wake()

    async def _transport_send(self, send: Callable[[Any], Any], data: Any) -> None:
        try:
            await send(data)
        except RuntimeError:  # RSGIProtocolClosed: the client is gone
            self._ended(WS_ABNORMAL)
            self._wake()

    def _close(self, status: int, code: int) -> None:
        """Close (``status``: Granian's, an HTTP status before the accept) and let a
        receive() waiting meanwhile return the disconnect with ``code``."""
        self._closed = code
        self._proto.close(status)
        self._wake()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result({"type": "websocket.disconnect", "code": code})
        self.release()

    def release(self) -> None:
        """Let go of Granian's transport: Granian sends the close frame only once that
        object is freed, which a reference cycle would leave to the garbage collector
        (seconds later). Called at the close and when the app returns."""
        if self._receiving is not None:
            self._receiving.cancel()
            self._receiving = None
        self._transport = None

    def _wake(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
