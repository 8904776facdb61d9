"""An HTTP or websocket connection between the server and the app: a ``receive`` the
shutdown can interrupt with a disconnect, and a ``send`` that notes the response's progress."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from asgiref.typing import ASGIReceiveCallable

from .._core.cancellation import CancelReason
from .._core.phases import Phase
from .._core.registry import Tracked
from .protocol import PATHSEND, SHUTTING_DOWN_BODY, Message, Send, refuse_http

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle


class InterruptibleReceive:
    """``receive()`` that can be made to return a disconnect at any moment.

    On shutdown the first cancel delivers the disconnect the way the client would
    have: Django (5.2 and 6.1) then cancels the view itself and lets it clean up.
    The task blocked in ``receive()`` is interrupted with ``cancel()``, which this
    wrapper takes back (``uncancel()``) and turns into the disconnect message.

    (One per connection, made on every request's path: what is not given starts at the
    class's defaults.)
    """

    _interrupted = False
    _interrupting = False
    _waiter: asyncio.Task[Any] | None = None
    #: The response's send, to tell a client that left early from the normal
    #: ``http.disconnect`` that follows a complete response.
    response: TrackingSend | None = None

    def __init__(
        self, receive: ASGIReceiveCallable, disconnect: Message, item: Tracked | None = None
    ) -> None:
        self._receive = receive
        self._disconnect = disconnect
        self._item = item

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


class TrackingSend:
    """``send()`` that notes whether the response began, ended (``finished``: its last
    message given; ``sent``: the server took it), and adds ``Connection: close`` to
    responses that begin from CLOSING on; ``refuse()`` answers 503 in the app's place.
    ``pathsend``: the server takes ``http.response.pathsend``."""

    started = False
    finished = False
    sent = False
    _refused = False

    def __init__(self, send: Send, lifecycle: Lifecycle, *, pathsend: bool = False) -> None:
        self._send = send
        self._lifecycle = lifecycle
        self.pathsend = pathsend

    async def __call__(self, message: Any) -> None:
        if self._refused:
            return  # the client has its 503 already; what the app sends after it is dropped
        kind = message["type"]
        if (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind == PATHSEND
        ):
            self.finished = True
        elif kind == "http.response.start":
            self.started = True
            if self._lifecycle.phase >= Phase.CLOSING:
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)
        self.sent = self.finished

    async def refuse(self) -> bool:
        """503 + ``Connection: close`` through the server's ``send`` if the response has
        not begun (the app's own later messages are dropped); True if it was sent."""
        if self.started:
            return False
        self.started = self._refused = True
        await refuse_http(self._send, SHUTTING_DOWN_BODY)
        self.finished = self.sent = True
        return True
