"""An HTTP or websocket connection between the server and the app: a ``receive`` the
shutdown can interrupt with a disconnect, and a ``send`` that notes the response's progress
(and ends an endless stream when CLOSING begins)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from asgiref.typing import ASGIReceiveCallable

from .._core.cancellation import CancelReason
from .._core.phases import Phase
from .._core.registry import Tracked, TrackedRequest
from .protocol import PATHSEND, SHUTTING_DOWN_BODY, Message, Send, refuse_http
from .streams import UNHEARD_DISCONNECT, StreamEnded, is_event_stream

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

_DRAINING, _CLOSING = Phase.DRAINING, Phase.CLOSING

#: The message that ends a response's body.
STREAM_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


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
        # No local names the task: a cancel's traceback keeps this frame, and the task
        # keeps its cancel: a cycle, which only the garbage collector would free (with
        # the task's context, frames and traceback), on every request whose disconnect
        # watch is cancelled at its end.
        self._waiter = asyncio.current_task()
        try:
            message = await self._receive()
            item = self._item
            if message["type"] == self._disconnect["type"] and item is not None:
                if self.response is None or not self.response.finished:
                    item.tell(CancelReason.DISCONNECT)
                    await item.wait_unshielded()  # a shield holds the disconnect back
            return message
        except asyncio.CancelledError:
            if self._interrupting:
                self._interrupting = False
                if _uncancel_current_task():
                    return self._disconnect
            raise
        finally:
            self._waiter = None


def _uncancel_current_task() -> bool:
    """Take back one cancel of the current task: True if none is left."""
    task = asyncio.current_task()
    return task is not None and task.uncancel() == 0


class TrackingSend:
    """``send()`` that notes whether the response began, ended (``finished``: its last
    message given; ``sent``: the server took it), and adds ``Connection: close`` to
    responses that begin from DRAINING on; ``refuse()`` answers 503 in the app's place.
    ``pathsend``: the server takes ``http.response.pathsend``.

    When CLOSING begins (``closing()``), an endless stream (``streams.py``) is ended in
    the app's place: once the app's body message in flight is taken (one at a time), the
    server gets the stream's last chunk and the end of the body; then the request is
    cancelled with reason SHUTDOWN, whose first step delivers ``http.disconnect`` to the
    app (``InterruptibleReceive``). What the app sends after the end began is not the
    client's (``_after_the_end``).

    (One per request, made on every request's path: what is not given starts at the
    class's defaults.)
    """

    started = False
    finished = False
    sent = False
    #: The server's ``send`` is no longer the app's: after a refusal its messages are
    #: dropped; after the end of its stream began (``ending``), see ``_after_the_end``.
    _taken = False
    #: The response's head, once the server has taken it (its content type tells a stream).
    head: Message | None = None
    #: CLOSING began: a stream whose head goes out now is ended right after it.
    _closing = False
    #: The app's body chunk (``more_body``) is with the server now.
    _in_chunk = False
    #: Resolved when the app's chunk in flight has been taken (made by the end, if it waits).
    _chunk_taken: asyncio.Future[None] | None = None
    #: The end of an endless stream, once it began.
    ending: asyncio.Task[None] | None = None
    #: When the end was out (the loop's clock).
    _ended_at: float | None = None

    def __init__(
        self,
        send: Send,
        lifecycle: Lifecycle,
        item: TrackedRequest | None = None,
        *,
        pathsend: bool = False,
    ) -> None:
        self._send = send
        self._lifecycle = lifecycle
        self._item = item
        self.pathsend = pathsend

    async def __call__(self, message: Any) -> None:
        if self._taken:
            if self.ending is not None:
                await self._after_the_end(message)
            return  # the client has its 503 already; what the app sends after it is dropped
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            phase = self._lifecycle.phase
            if phase >= _DRAINING:
                # A kept-alive client (a balancer's pool, a Service's client) reconnects
                # for its next request, and so reaches a server that serves on.
                self._closing = phase >= _CLOSING
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await self._send(message)
            self.head = message
            if self._closing:
                self.closing()
            return
        if kind == "http.response.body":
            if message.get("more_body", False):
                self._in_chunk = True
                try:
                    await self._send(message)
                finally:
                    self._in_chunk = False
                    taken = self._chunk_taken
                    if taken is not None and not taken.done():
                        taken.set_result(None)
                return
            self.finished = True
        elif kind == PATHSEND:
            self.finished = True
        await self._send(message)
        self.sent = self.finished

    async def refuse(self) -> bool:
        """503 + ``Connection: close`` through the server's ``send`` if the response has
        not begun (the app's own later messages are dropped); True if it was sent."""
        if self.started:
            return False
        self.started = self._taken = True
        await refuse_http(self._send, SHUTTING_DOWN_BODY)
        self.finished = self.sent = True
        return True

    # -- endless streams --------------------------------------------------------------

    def closing(self) -> None:
        """CLOSING began (the lifecycle tells every request): an endless stream whose
        head is out and whose end is not is ended now; one whose head is on its way,
        once the server has taken it."""
        self._closing = True
        item = self._item
        if self.head is None or self.finished or self._taken or item is None:
            return
        marked = item.endless
        if marked is None:
            marked = is_event_stream(self.head.get("headers", ()))
        if marked:
            self._taken = True  # from now on, the app's messages are not the client's
            self.ending = asyncio.get_running_loop().create_task(
                self._end(item, item.last_chunk), name=f"django_graceful: ending {item.what}"
            )

    async def _end(self, item: TrackedRequest, last: bytes) -> None:
        if self._in_chunk:  # one body message at a time: the app's goes first
            self._chunk_taken = asyncio.get_running_loop().create_future()
            await self._chunk_taken
        self.finished = True
        try:
            if last:
                await self._send({"type": "http.response.body", "body": last, "more_body": True})
            await self._send(STREAM_END)
            self.sent = True
        except Exception as exc:  # e.g. the client left meanwhile
            logger.debug("could not end the stream of %s: %r", item.what, exc)
        self._ended_at = asyncio.get_running_loop().time()
        # What the app hears when its client closes the stream: http.disconnect.
        item.cancel(CancelReason.SHUTDOWN)

    async def _after_the_end(self, message: Any) -> None:
        """The app sent after its stream's end began. A chunk is dropped, without a
        pause: the disconnect the end delivers (or the cancel it brings) is due at the
        app's next await, which is then the stream's own (a Django view's generator is
        cancelled inside it, and its ``finally`` runs). A chunk ``UNHEARD_DISCONNECT`` s
        after the end is out raises ``StreamEnded``: the app does not listen while it
        streams. Its last message waits until the end is out: the app returns after it."""
        ending = self.ending
        assert ending is not None
        if message.get("more_body", False):
            ended_at = self._ended_at
            if (
                ended_at is None
                or asyncio.get_running_loop().time() < ended_at + UNHEARD_DISCONNECT
            ):
                return
            raise StreamEnded(
                "the stream was ended at the shutdown: the client has its complete response"
            )
        await asyncio.wait({ending})
