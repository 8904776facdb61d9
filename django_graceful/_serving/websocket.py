"""Websockets at shutdown: hooks run, then a close frame to the client, a disconnect to the app."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.typing import ASGIReceiveCallable

from .._core.cancellation import CancelReason
from .._core.deadlines import bounded, bounded_call
from .._core.hooks import hook_name, log_failure
from .._core.registry import Tracked
from .protocol import SESSION_KEY, WS_SERVICE_RESTART, Send

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle
    from .connection import InterruptibleReceive

logger = logging.getLogger("django_graceful")

#: Seconds a close frame we sent gets to leave, and the client to answer it, before the
#: websocket leaves the registry (a server may drop unsent frames once it stops).
CLOSE_HANDSHAKE = 1.0
#: A hook: ``async def hook()`` or a plain function (run in a thread of its own).
Hook = Callable[[], Any]


def websocket_session(scope: Any) -> WebsocketSession | None:
    """The session GracefulASGI keeps for this websocket scope (None outside GracefulASGI)."""
    session = scope.get(SESSION_KEY) if isinstance(scope, dict) else None
    return session if isinstance(session, WebsocketSession) else None


class WebsocketSession:
    """One websocket as GracefulASGI serves it.

    The app's ``send`` passes through :meth:`send`, which notes whether the app
    accepted and closed the connection. When CLOSING begins, an accepted and still
    open connection is wound down: its hooks run (each within ``HOOK_TIMEOUT``),
    the client gets a close frame with ``close_code``, and the app's ``receive``
    returns ``websocket.disconnect`` with that code, so the app ends the way it
    does when a client leaves (Channels: group discards, ``disconnect(code)``).
    A connection accepted later in the shutdown is wound down when it accepts.
    At CANCELLING, hooks still running are abandoned and the close is sent at once;
    an app that still runs after its disconnect is cancelled. The websocket leaves
    the registry when the app has returned and the server has reported the close
    done (its own ``websocket.disconnect``), or ``CLOSE_HANDSHAKE`` s after the close.
    """

    __slots__ = (
        "_cancelling",
        "_closed_by_us",
        "_closing",
        "_context",
        "_hooks",
        "_in_hooks",
        "_lifecycle",
        "_lock",
        "_receive",
        "_send",
        "_server_receive",
        "_skipping_hooks",
        "_task",
        "accepted",
        "close_code",
        "closed",
        "item",
    )

    def __init__(
        self,
        send: Send,
        server_receive: ASGIReceiveCallable,
        receive: InterruptibleReceive,
        item: Tracked,
        lifecycle: Lifecycle,
    ) -> None:
        self._send = send
        self._server_receive = server_receive
        self._receive = receive
        self.item = item
        self._lifecycle = lifecycle
        self._hooks: list[Hook] = []
        self._lock = asyncio.Lock()
        self._context = contextvars.copy_context()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._cancelling = False
        self._in_hooks = False
        self._skipping_hooks = False
        self._closed_by_us = False
        self.accepted = False
        #: A close frame went out (from the app or from us), or the handshake was denied.
        self.closed = False
        self.close_code = WS_SERVICE_RESTART
        item.on_closing = self.on_closing
        item.on_cancel = self.on_cancel

    def add_hook(self, hook: Hook) -> None:
        """Run ``hook()`` when the shutdown begins, before the close frame (bounded)."""
        if not callable(hook):
            raise TypeError(f"a websocket shutdown hook is a callable, not {hook!r}")
        self._hooks.append(hook)

    async def send(self, message: Any) -> None:
        """The app's ``send``."""
        kind = message["type"]
        async with self._lock:
            if self._closed_by_us:
                # The client was told already; a goodbye from disconnect() goes nowhere.
                return
            if kind == "websocket.accept":
                self.accepted = True
            elif kind == "websocket.close" or kind == "websocket.http.response.start":
                self.closed = True
            await self._send(message)
        if kind == "websocket.accept" and self._closing and self._task is None:
            self._start(run_hooks=not self._cancelling)

    # -- called by the lifecycle ------------------------------------------------------

    def on_closing(self) -> None:
        """CLOSING began."""
        self._closing = True
        if self.accepted and not self.closed and self._task is None:
            self._start(run_hooks=True)

    def on_cancel(self, reason: CancelReason) -> None:
        """CANCELLING began (the lifecycle's first cancel of this websocket)."""
        self._cancelling = True
        task = self._task
        if task is not None and not task.done():
            if self._in_hooks:
                self._skipping_hooks = True
                task.cancel("django_graceful: hooks out of time, closing now")
            return  # the close is under way; the next cancel reaches the app
        if self.accepted and not self.closed:
            self._start(run_hooks=False)
        elif not self._receive.interrupted:
            self._receive.interrupt(reason)
        elif self.item.task is not None and not self.item.task.done():
            # Told it was disconnected, still running: cancel it now.
            self.item.task.cancel(f"django_graceful: {reason}")

    async def finished(self) -> None:
        """The app returned: a close we sent may finish (bounded); hooks are abandoned."""
        task = self._task
        if task is None or task.done():
            return
        if self._closed_by_us:
            await asyncio.wait({task}, timeout=CLOSE_HANDSHAKE)
            if task.done():
                return
        task.cancel("django_graceful: the websocket ended")

    def abandon(self) -> None:
        """The app raised or was cancelled: stop winding down."""
        task = self._task
        if task is not None and not task.done():
            task.cancel("django_graceful: the websocket ended")

    # -- the wind-down ----------------------------------------------------------------

    def _start(self, *, run_hooks: bool) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(
            self._wind_down(run_hooks),
            name=f"django_graceful: closing {self.item.what}",
            context=self._context.copy(),
        )

    async def _wind_down(self, run_hooks: bool) -> None:
        if run_hooks and self._hooks:
            self._in_hooks = True
            try:
                await self._run_hooks()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._skipping_hooks or task is None or task.uncancel() > 0:
                    raise
            finally:
                self._in_hooks = False
        await self._close()

    async def _run_hooks(self) -> None:
        timeout = self._lifecycle.settings.HOOK_TIMEOUT
        for hook in list(self._hooks):
            name = hook_name(hook)
            outcome = await bounded_call(hook, timeout, name)
            log_failure(
                outcome, f"websocket shutdown hook {name} ({self.item.what})", timeout, "closing"
            )

    async def _close(self) -> None:
        """Send the close frame (unless the app closed meanwhile) and deliver the disconnect."""
        code = self.close_code
        async with self._lock:
            if self.closed:
                return  # the app closed by itself: the server delivers its disconnect
            self.closed = self._closed_by_us = True
        # The close goes out first, the disconnect right after: the app may end as soon
        # as it has the disconnect. Not one after the other: on Granian the close waits
        # while the app waits in receive(), and the disconnect is what ends that wait.
        closing = asyncio.ensure_future(self._send_close(code))
        self._receive.interrupt(message={"type": "websocket.disconnect", "code": code})
        try:
            await closing
        except asyncio.CancelledError:
            closing.cancel()
            raise
        except Exception as exc:  # e.g. the client left meanwhile
            logger.debug("could not close %s: %r", self.item.what, exc)
            return
        # The server reports the close handshake done (or the connection gone) with its
        # own disconnect; until then the frame may still sit in a buffer that a stopping
        # server drops (Daphne).
        outcome = await bounded(self._server_disconnect(), CLOSE_HANDSHAKE)
        if not outcome.finished:
            logger.debug("%s: no close handshake within %g s", self.item.what, CLOSE_HANDSHAKE)

    def _send_close(self, code: int) -> Awaitable[None]:
        driver = self._lifecycle.driver
        if driver is not None:
            return driver.close_websocket(self._send, code, self.item.task)
        return self._send({"type": "websocket.close", "code": code})

    async def _server_disconnect(self) -> None:
        while (await self._server_receive())["type"] != "websocket.disconnect":
            pass
