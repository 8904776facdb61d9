"""The ASGI words GracefulASGI, its connection wrappers and the server adapters share.

Answers given without the app (503 bodies, websocket close codes, an EventSource's
retry), the scope keys under which a connection's tracking travels to the middleware and
the consumers, and the refusal itself. Imports nothing of django_graceful: every layer may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.typing import ASGIReceiveCallable, Scope

Message = dict[str, Any]
#: A ``send`` as the server hands it, taking the messages as plain dicts.
Send = Callable[[Message], Awaitable[None]]

#: The body of the 503 answered from CLOSING on (and to work cancelled before it answered).
SHUTTING_DOWN_BODY = b"Service is shutting down.\n"
#: The body of the 503 answered when startup failed.
UNAVAILABLE_BODY = b"Service Unavailable: startup failed.\n"

#: 1012 Service Restart: the client may reconnect (to another worker) at once.
WS_SERVICE_RESTART = 1012
#: 1011 Internal Error: a websocket refused because startup failed.
WS_INTERNAL_ERROR = 1011
#: Close codes a server may send (RFC 6455 section 7.4 and the IANA registry), and 3000-4999.
SENDABLE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)

#: How long a refusal reads a request body that is still arriving before it answers: a
#: server that closes a connection with unread bytes resets it, and the client may then
#: lose the answer (or see its upload fail with a broken pipe before it reads it).
BODY_DRAIN_SECONDS = 1.0

HTTP_DISCONNECT: Message = {"type": "http.disconnect"}

#: What an ``EventSource`` (``Accept: text/event-stream``) asking while the process stops
#: gets instead of the 503, which would end it for good (any answer but a 200 event stream
#: "fails the connection"): an event stream that sets its reconnection time and ends. It
#: comes back a second later, to a sibling or the next process.
EVENT_STREAM_RETRY = b": shutting down\nretry: 1000\n\n"

#: The ASGI extension by which a server sends a file from its path (Granian, both
#: interfaces): no bytes through Python, and no buffering where the server's stream has
#: no backpressure (Granian's RSGI).
PATHSEND = "http.response.pathsend"
#: Scope key under which the request's registry entry travels to GracefulMiddleware.
TRACKED_KEY = "django_graceful.tracked"
#: Scope key under which a websocket's session travels to the app (GracefulConsumerMixin).
SESSION_KEY = "django_graceful.websocket"


def valid_close_code(code: object) -> bool:
    """Whether a server may send ``code`` in a close frame."""
    return (
        isinstance(code, int)
        and not isinstance(code, bool)
        and (code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999)
    )


async def refuse(
    scope: Scope,
    receive: ASGIReceiveCallable,
    send: Send,
    body: bytes,
    ws_code: int,
    *,
    restarting: bool = False,
) -> None:
    """Answer without the app: 503 + ``Connection: close``, or a websocket close.
    ``restarting``: the process stops and another serves soon; an EventSource is told to
    come back (``EVENT_STREAM_RETRY``)."""
    if scope["type"] == "http":
        if has_body(scope):
            await drain_body(receive, BODY_DRAIN_SECONDS)
        if restarting and accepts_event_stream(scope):
            await retry_event_stream(send)
        else:
            await refuse_http(send, body)
    elif scope["type"] == "websocket":
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": ws_code})


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (``Content-Length`` > 0, or chunked)."""
    headers: Any = scope.get("headers", ())
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def accepts_event_stream(scope: Scope) -> bool:
    """Whether the request is an EventSource's: ``Accept: text/event-stream``."""
    headers: Any = scope.get("headers", ())
    for name, value in headers:
        if name.lower() == b"accept":
            return b"text/event-stream" in value.lower()
    return False


async def retry_event_stream(send: Send) -> None:
    """A complete event stream that only sets the client's reconnection time, and closes
    the connection (the next request goes where the listening socket sends it)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-store"),
                (b"content-length", str(len(EVENT_STREAM_RETRY)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": EVENT_STREAM_RETRY})


async def drain_body(receive: ASGIReceiveCallable, seconds: float) -> None:
    """Read (and drop) the request body until it ends, the client leaves, or ``seconds``."""

    async def read() -> None:
        while True:
            message: Any = await receive()
            if message.get("type") != "http.request" or not message.get("more_body", False):
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), seconds)


async def refuse_http(send: Send, body: bytes) -> None:
    """A complete 503 response that also closes the connection."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
