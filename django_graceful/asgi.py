"""The lifespan-aware ASGI entrypoint that wraps Django or any ASGI app (e.g. Channels),
and serves it over RSGI too (Granian's default interface)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import current_task, get_running_loop
from collections.abc import Mapping
from typing import Any

from asgiref.typing import ASGIReceiveCallable, Scope

from ._core.deadlines import bounded
from ._core.lifecycle import Lifecycle, StartupFailed, get_lifecycle
from ._core.phases import Phase
from ._core.registry import (
    CANCEL_MESSAGE_PREFIX,
    Tracked,
    TrackedRequest,
    WorkKind,
    request_label,
    reset_item,
    use_item,
)
from ._serving import threads as _threads
from ._serving.connection import InterruptibleReceive, TrackingSend
from ._serving.protocol import (
    BODY_DRAIN_SECONDS,
    HTTP_DISCONNECT,
    PATHSEND,
    SESSION_KEY,
    SHUTTING_DOWN_BODY,
    TRACKED_KEY,
    UNAVAILABLE_BODY,
    WS_INTERNAL_ERROR,
    WS_SERVICE_RESTART,
    Send,
    refuse,
)
from ._serving.rsgi import HTTPConnection, WebsocketConnection, http_scope, websocket_scope
from ._serving.streams import StreamEnded
from ._serving.threads import ReusedThreadContext, SyncThreads, attend_request_ends
from ._serving.websocket import WebsocketSession
from .adapters import detect

logger = logging.getLogger("django_graceful")

NOT_RSGI_MESSAGE = (
    "GracefulASGI was called with two arguments, but the first is not an RSGI scope: "
    "GracefulASGI(scope, receive, send) for ASGI, GracefulASGI.__rsgi__(scope, protocol) "
    "for RSGI"
)

#: Beyond reading an upload's body, how long a 503 to a stopped startup may take to send.
REFUSE_SLACK = 0.5

_SERVING, _CLOSING = Phase.SERVING, Phase.CLOSING

#: The scope types served (ASGI's three, and Channels' ``channel`` of ``runworker``).
SCOPE_TYPES = ("http", "websocket", "lifespan", "channel")


class _NotGiven:
    """The default of ``send``: called with two arguments (RSGI: ``scope, protocol``),
    not with ``send=None``."""


_NOT_GIVEN = _NotGiven()


class GracefulASGI:
    """Answers ``lifespan`` itself, tracks every connection, and refuses new work
    once the shutdown is past DRAINING. Everything else goes to the wrapped app.
    """

    def __init__(self, app: Any, *, lifecycle: Lifecycle | None = None) -> None:
        if not callable(app):
            raise TypeError(f"GracefulASGI wraps an ASGI application, not {app!r}")
        self.app = app
        self._lifecycle = lifecycle
        #: Idle threads for requests' sync code (``REUSE_SYNC_THREADS``).
        self._sync_threads = SyncThreads()
        #: The app carries each request's tracked work itself (``GracefulASGIHandler``).
        self._carried = getattr(type(app), "carries_tracked_item", False) is True

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle or get_lifecycle()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: Send | _NotGiven = _NOT_GIVEN
    ) -> None:
        # The path of every request, in this one coroutine (each coroutine around the
        # app's costs at each of its awaits): an HTTP request while the cycle serves (up
        # to DRAINING), on the loop it started on (so not closed: not ``stale``), goes
        # straight on; any other call is seen to by ``_admit`` first.
        lifecycle = self._lifecycle or get_lifecycle()
        if (
            type(scope) is dict
            and scope.get("type") == "http"
            and _SERVING <= lifecycle.phase < _CLOSING
            and lifecycle.loop is get_running_loop()
            and lifecycle.startup_error is None
            and callable(receive)
            and callable(send)  # not given (RSGI): not callable
        ):
            if lifecycle.state and not scope.get("state"):
                scope["state"] = dict(lifecycle.state)
        else:
            admitted = await self._admit(scope, receive, send)
            if admitted is None:
                return
            lifecycle = admitted
        # A tracked HTTP request.
        settings = lifecycle.settings
        item = TrackedRequest(
            scope.get("method", "?"),
            scope.get("path", "?"),
            current_task(),
            redacted=settings.REDACT_PATHS,
        )
        interruptible = InterruptibleReceive(receive, HTTP_DISCONNECT, item)
        item.on_cancel = interruptible.interrupt
        scope[TRACKED_KEY] = item  # type: ignore[literal-required]
        lifecycle.registry.add(item)
        extensions: Any = scope.get("extensions")
        tracking_send = TrackingSend(
            send,  # type: ignore[arg-type]  # given: _admit took the call otherwise
            lifecycle,
            item,
            pathsend=extensions is not None and PATHSEND in extensions,
        )
        interruptible.response = item.response = tracking_send
        if not self._sync_threads.watching:  # its pools too, threads reused or not
            self._sync_threads.serve_cycle(lifecycle)
        # The request is the work its code runs for, in the view and outside it (its
        # request_finished receivers: leave_connections_clean names the view), and in
        # the threads of its sync code: current_item(), current_cancellation(). Django's
        # handler (ours) carries it in its ThreadSensitiveContext, another app in
        # current_item()'s own context variable.
        previous_item = None if self._carried else use_item(item)
        # The app gets bound methods: called the quick way, not through an instance's
        # __call__ (a request calls each a few times).
        try:
            if settings.REUSE_SYNC_THREADS:
                if not _threads.attending:
                    attend_request_ends(True)
                async with ReusedThreadContext(self._sync_threads, tracking_send, item):
                    await self.app(scope, interruptible.__call__, tracking_send.__call__)
            else:
                if _threads.attending:
                    attend_request_ends(False)
                await self.app(scope, interruptible.__call__, tracking_send.__call__)
        except asyncio.CancelledError as exc:
            await self._answer_cancelled(item, tracking_send)
            if not (_ours(exc) and tracking_send.finished):
                raise
            # Our shutdown cancel, answered: the request is over. Raised on, the server
            # would log it as an error (one traceback per request), though all is well.
            task = asyncio.current_task()
            while task is not None and task.uncancel() > 0:
                pass
            if tracking_send.ending is not None:  # not before its stream's end is out
                await asyncio.wait({tracking_send.ending})
        except StreamEnded:
            if tracking_send.ending is None:
                raise
            # The app sent on after we ended its endless stream (a consumer that reads no
            # message while it streams): its client has a complete response, all is well.
        else:
            if item.cancel_count:
                if tracking_send.ending is not None:
                    # Its endless stream's end is out (it cancels the request once it is),
                    # unless CANCELLING came first: not before, or the server would take
                    # the response as cut off.
                    await asyncio.wait({tracking_send.ending})
                await self._answer_cancelled(item, tracking_send)
        finally:
            if previous_item is not None:
                reset_item(previous_item)
            lifecycle.registry.discard(item)

    async def _admit(
        self, scope: Scope, receive: ASGIReceiveCallable, send: Send | _NotGiven
    ) -> Lifecycle | None:
        """A call the quick path of ``__call__`` does not take, each check in full: the
        lifecycle, for an HTTP request to track (``__call__`` goes on); None once served
        here (RSGI, lifespan, a refusal, a websocket, a channel)."""
        if isinstance(send, _NotGiven):
            # Called as an RSGI app by something that hid __rsgi__ (a wrapper around us).
            if not hasattr(scope, "proto"):
                raise TypeError(NOT_RSGI_MESSAGE)
            await self.__rsgi__(scope, receive)
            return None
        kind: str | None = scope.get("type") if type(scope) is dict else None
        if kind not in SCOPE_TYPES or not (callable(receive) and callable(send)):
            kind = _scope_type(scope, receive, send)  # raises, saying what is wrong
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return None
        lifecycle = self.lifecycle
        phase = lifecycle.phase
        if phase < Phase.SERVING or lifecycle.stale:
            # The server sent no lifespan (Daphne, Granian asginl, --lifespan off); or a
            # test client without one, on a new event loop.
            try:
                await lifecycle.startup(self, detect, lazy=True)
            except StartupFailed:
                await refuse(scope, receive, send, UNAVAILABLE_BODY, WS_INTERNAL_ERROR)
                return None
            except asyncio.CancelledError:
                await _answer_stopped_during_startup(scope, receive, send)
                raise
            phase = lifecycle.phase
        elif lifecycle.startup_error is not None:
            await refuse(scope, receive, send, UNAVAILABLE_BODY, WS_INTERNAL_ERROR)
            return None
        if phase >= Phase.CLOSING and not lifecycle.read_before_closing(kind == "http"):
            lifecycle.answering += 1
            try:
                if _health_probe(scope):
                    # Answered by the view (live: 200, ready: 503), untracked: a probe
                    # never holds the shutdown.
                    await self.app(scope, receive, send)
                else:
                    await refuse(
                        scope,
                        receive,
                        send,
                        SHUTTING_DOWN_BODY,
                        WS_SERVICE_RESTART,
                        restarting=True,
                    )
            finally:
                lifecycle.answering -= 1
            return None
        if not scope.get("state") and lifecycle.state:
            scope["state"] = dict(lifecycle.state)
        if kind == "http":
            return lifecycle
        if kind == "websocket":
            await self._websocket(lifecycle, scope, receive, send)
        else:
            await self.app(scope, receive, send)
        return None

    # -- RSGI (Granian's default interface) -------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Granian's worker starts (its loop not running yet): the startup, as
        ``lifespan.startup`` runs it. A failed startup raises: the worker ends, and
        Granian with it."""
        loop.run_until_complete(self.lifecycle.startup(self, detect))

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Granian's worker stopped serving: the shutdown, as ``lifespan.shutdown`` runs
        it (after a signal it is over already)."""
        try:
            loop.run_until_complete(self.lifecycle.shutdown("lifespan"))
        except Exception:
            logger.exception("shutdown failed")

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """One RSGI call, served as the ASGI connection it stands for (see
        ``_serving/rsgi.py``)."""
        if scope.proto == "http":
            http = HTTPConnection(protocol, scope)
            try:
                await self(http_scope(scope), http.receive, http.send)  # type: ignore[arg-type]
            finally:
                http.release()
        elif scope.proto == "ws":
            ws = WebsocketConnection(protocol)
            try:
                await self(websocket_scope(scope), ws.receive, ws.send)  # type: ignore[arg-type]
            finally:
                ws.release()
        else:
            raise ValueError(f"GracefulASGI does not serve RSGI protocol {scope.proto!r}")

    async def _websocket(
        self, lifecycle: Lifecycle, scope: Scope, receive: ASGIReceiveCallable, send: Send
    ) -> None:
        """A tracked websocket: closed with 1012 when CLOSING begins (see WebsocketSession)."""
        what = request_label("WS", scope.get("path", "?"), redact=lifecycle.settings.REDACT_PATHS)
        item = Tracked(WorkKind.WEBSOCKET, what, asyncio.current_task())
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
    async def _answer_cancelled(item: Tracked, sent: TrackingSend) -> None:
        """A request we cancelled before its response began still gets an answer: 503."""
        if item.cancel_count and not sent.started:
            with contextlib.suppress(Exception):
                await sent.refuse()

    async def _lifespan(self, scope: Scope, receive: ASGIReceiveCallable, send: Send) -> None:
        """The ASGI lifespan protocol, answered here and never passed to the wrapped app.

        A failed startup answers ``lifespan.startup.failed`` and raises its
        :class:`StartupFailed`. Each server then still exits non-zero with the message:
        Uvicorn (and Gunicorn's Uvicorn worker) ignores an error after a failure it was
        told of; Hypercorn's ``send`` raises its own error first; Granian logs the
        traceback with its "ASGI lifespan startup failed"; Gunicorn's asgi worker logs it
        at DEBUG; Daphne sends no lifespan. A lifespan after STOPPED is the next cycle.
        """
        lifecycle = self.lifecycle
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                try:
                    await lifecycle.startup(self, detect)
                except StartupFailed as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    # Then raise, as Starlette does: an in-process client (TestClient,
                    # asgi-lifespan) raises it with its message. Servers take it as the
                    # failure they were told of (see ``_lifespan``'s note).
                    raise
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


def _scope_type(scope: Scope, receive: Any, send: Any) -> str:
    """The scope's type, checked before anything starts; a clear error for what no ASGI
    server passes (a programming error, e.g. in a test or an embedding program). Called
    where the quick look (a dict with a known type, callables) found something else."""
    if not callable(receive) or not callable(send):
        raise TypeError(
            "GracefulASGI(scope, receive, send): receive and send must be the server's "
            f"awaitable callables, not receive={receive!r}, send={send!r}"
        )
    kind = scope.get("type") if isinstance(scope, Mapping) else None
    if kind is None:
        raise ValueError(f"GracefulASGI was called with a scope without a 'type': {scope!r}")
    if kind not in SCOPE_TYPES:
        raise ValueError(
            f"GracefulASGI does not serve scope type {kind!r} (only {', '.join(SCOPE_TYPES)}): "
            "nothing was started"
        )
    return str(kind)


async def _answer_stopped_during_startup(
    scope: Scope, receive: ASGIReceiveCallable, send: Send
) -> None:
    """The server cancelled a connection that waited for the lazy startup: it is stopping
    before we could take its signals (Daphne's SIGTERM cancels every connection). The
    client gets the 503 (or 1012) of any connection refused while stopping, not nothing."""
    what = request_label(scope.get("method", "WS"), scope.get("path", "?"))
    logger.warning(
        "%s: the server stopped it while it waited for the startup; answered 503 (shutting down)",
        what,
    )
    outcome = await bounded(
        refuse(scope, receive, send, SHUTTING_DOWN_BODY, WS_SERVICE_RESTART, restarting=True),
        BODY_DRAIN_SECONDS + REFUSE_SLACK,
    )
    if not outcome.ok:
        logger.debug("could not answer %s", what, exc_info=outcome.error)


def _health_probe(scope: Scope) -> bool:
    """An HTTP request for the health views wherever the URLconf includes them; its
    ``path_info`` found the way Django's handler finds it (``path`` less ``root_path``)."""
    if scope["type"] != "http":
        return False
    from .views import is_health_probe

    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        return is_health_probe(path)
    except Exception:  # no Django URLconf behind this app, or one that does not import
        return False


def _ours(exc: asyncio.CancelledError) -> bool:
    """Whether the lifecycle cancelled this task (``Tracked.cancel``), not the server."""
    return bool(exc.args) and str(exc.args[0]).startswith(CANCEL_MESSAGE_PREFIX)


def get_asgi_application() -> GracefulASGI:
    """Django's ASGI application, wrapped: the drop-in for ``django.core.asgi``'s."""
    import django

    from ._serving.handler import GracefulASGIHandler

    django.setup(set_prefix=False)
    return GracefulASGI(GracefulASGIHandler())
