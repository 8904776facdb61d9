"""The lifespan-aware ASGI entrypoint that wraps Django or any ASGI app (e.g. Channels)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from ._core.cancellation import CancelReason
from ._core.lifecycle import Lifecycle, Phase, StartupFailed, get_lifecycle
from ._core.registry import Tracked, WorkKind
from ._serving.websocket import SESSION_KEY, WebsocketSession

logger = logging.getLogger("django_graceful")

Message = dict[str, Any]

SHUTTING_DOWN_BODY = b"Service is shutting down.\n"
UNAVAILABLE_BODY = b"Service Unavailable: startup failed.\n"
#: Websocket close codes: 1012 Service Restart, 1011 Internal Error.
WS_SERVICE_RESTART = 1012
WS_INTERNAL_ERROR = 1011

HTTP_DISCONNECT: Message = {"type": "http.disconnect"}

#: Scope key under which the request's registry entry travels to GracefulMiddleware.
TRACKED_KEY = "django_graceful.tracked"

RSGI_MESSAGE = (
    "GracefulASGI is an ASGI application but was called with two arguments: Granian "
    "runs RSGI by default. Start Granian with --interface asgi."
)


class GracefulASGI:
    """Answers ``lifespan`` itself, tracks every connection, and refuses new work
    once the shutdown is past DRAINING. Everything else goes to the wrapped app.
    """

    def __init__(self, app: Any, *, lifecycle: Lifecycle | None = None) -> None:
        if not callable(app):
            raise TypeError(f"GracefulASGI wraps an ASGI application, not {app!r}")
        self.app = app
        self._lifecycle = lifecycle

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle or get_lifecycle()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable | None = None
    ) -> None:
        if send is None:
            logger.error(RSGI_MESSAGE)
            raise TypeError(RSGI_MESSAGE)
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        lifecycle = self.lifecycle
        phase = lifecycle.phase
        if lifecycle.startup_error is not None:
            await refuse(scope, receive, send, UNAVAILABLE_BODY, WS_INTERNAL_ERROR)
            return
        if phase < Phase.SERVING:
            # The server sent no lifespan (Daphne, Granian asginl, --lifespan off).
            try:
                await lifecycle.startup(self)
            except StartupFailed:
                await refuse(scope, receive, send, UNAVAILABLE_BODY, WS_INTERNAL_ERROR)
                return
            phase = lifecycle.phase
        if phase >= Phase.CLOSING:
            await refuse(scope, receive, send, SHUTTING_DOWN_BODY, WS_SERVICE_RESTART)
            return
        if not scope.get("state") and lifecycle.state:
            scope["state"] = dict(lifecycle.state)  # type: ignore[typeddict-unknown-key]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        lifecycle = self.lifecycle
        what = f"{scope.get('method', '?')} {scope.get('path', '?')}"
        item = Tracked(WorkKind.REQUEST, what, task=asyncio.current_task())
        interruptible = InterruptibleReceive(receive, HTTP_DISCONNECT, item)
        item.on_cancel = interruptible.interrupt
        scope[TRACKED_KEY] = item  # type: ignore[literal-required]
        lifecycle.registry.add(item)
        tracking_send = _TrackingSend(send, lifecycle)
        interruptible.response = tracking_send
        try:
            await self.app(scope, interruptible, tracking_send)
        except asyncio.CancelledError:
            await self._answer_cancelled(item, tracking_send)
            raise
        else:
            await self._answer_cancelled(item, tracking_send)
        finally:
            lifecycle.registry.discard(item)

    async def _websocket(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """A tracked websocket: closed with 1012 when CLOSING begins (see WebsocketSession)."""
        lifecycle = self.lifecycle
        item = Tracked(
            WorkKind.WEBSOCKET, f"WS {scope.get('path', '?')}", task=asyncio.current_task()
        )
        disconnect = {"type": "websocket.disconnect", "code": WS_SERVICE_RESTART}
        interruptible = InterruptibleReceive(receive, disconnect, item)
        session = WebsocketSession(send, receive, interruptible, item, lifecycle)
        scope[TRACKED_KEY] = item  # type: ignore[literal-required]
        scope[SESSION_KEY] = session  # type: ignore[literal-required]
        lifecycle.registry.add(item)
        try:
            await self.app(scope, interruptible, session.send)
        except BaseException:
            session.abandon()
            raise
        else:
            await session.finished()
        finally:
            lifecycle.registry.discard(item)

    @staticmethod
    async def _answer_cancelled(item: Tracked, sent: _TrackingSend) -> None:
        """A request we cancelled before its response began still gets an answer: 503."""
        if item.cancel_count and not sent.started:
            with contextlib.suppress(Exception):
                await refuse_http(sent, SHUTTING_DOWN_BODY)

    async def _lifespan(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The ASGI lifespan protocol, answered here and never passed to the wrapped app."""
        lifecycle = self.lifecycle
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                try:
                    await lifecycle.startup(self)
                except StartupFailed as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                state = scope.get("state")
                if state is not None:
                    state.update(lifecycle.state)
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                try:
                    await lifecycle.shutdown("lifespan")
                except Exception as exc:
                    logger.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return
            else:
                logger.error("ignoring unexpected lifespan message %r", kind)


class InterruptibleReceive:
    """``receive()`` that can be made to return a disconnect at any moment.

    On shutdown the first cancel delivers the disconnect the way the client would
    have: Django (5.2 and 6.1) then cancels the view itself and lets it clean up.
    The task blocked in ``receive()`` is interrupted with ``cancel()``, which this
    wrapper takes back (``uncancel()``) and turns into the disconnect message.
    """

    __slots__ = (
        "_disconnect",
        "_interrupted",
        "_interrupting",
        "_item",
        "_receive",
        "_waiter",
        "response",
    )

    def __init__(
        self, receive: ASGIReceiveCallable, disconnect: Message, item: Tracked | None = None
    ) -> None:
        self._receive = receive
        self._disconnect = disconnect
        self._item = item
        self._interrupted = False
        self._interrupting = False
        self._waiter: asyncio.Task[Any] | None = None
        #: The response's send, to tell a client that left early from the normal
        #: ``http.disconnect`` that follows a complete response.
        self.response: _TrackingSend | None = None

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(
        self, reason: CancelReason | None = None, *, message: Message | None = None
    ) -> None:
        """Make the pending and every later ``receive()`` return the disconnect
        (``message``, if given, instead of the one given at construction)."""
        if message is not None:
            self._disconnect = message
        self._interrupted = True
        if self._waiter is not None and not self._interrupting:
            self._interrupting = True
            self._waiter.cancel()

    async def __call__(self) -> Any:
        if self._interrupted:
            return self._disconnect
        self._waiter = waiter = asyncio.current_task()
        try:
            message = await self._receive()
            item = self._item
            if message["type"] == self._disconnect["type"] and item is not None:
                if self.response is None or not self.response.finished:
                    item.tell(CancelReason.DISCONNECT)
                    await item.wait_unshielded()  # a shield holds the disconnect back
            return message
        except asyncio.CancelledError:
            if self._interrupting and waiter is not None:
                self._interrupting = False
                if waiter.uncancel() == 0:
                    return self._disconnect
            raise
        finally:
            self._waiter = None


class _TrackingSend:
    """``send()`` that notes whether the response began, and adds ``Connection: close``
    to responses that begin from CLOSING on."""

    __slots__ = ("_lifecycle", "_send", "finished", "started")

    def __init__(self, send: ASGISendCallable, lifecycle: Lifecycle) -> None:
        self._send = send
        self._lifecycle = lifecycle
        self.started = False
        self.finished = False

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        elif message["type"] == "http.response.start":
            self.started = True
            if self._lifecycle.phase >= Phase.CLOSING:
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)


async def refuse(
    scope: Scope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    body: bytes,
    ws_code: int,
) -> None:
    """Answer without the app: 503 + ``Connection: close``, or a websocket close."""
    if scope["type"] == "http":
        await refuse_http(send, body)
    elif scope["type"] == "websocket":
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": ws_code})


def get_asgi_application() -> GracefulASGI:
    """Django's ASGI application, wrapped: the drop-in for ``django.core.asgi``'s."""
    import django

    from ._serving.handler import GracefulASGIHandler

    django.setup(set_prefix=False)
    return GracefulASGI(GracefulASGIHandler())


async def refuse_http(send: ASGISendCallable, body: bytes) -> None:
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
