"""The registry of in-flight work in this process: what runs, since when, and how to stop it."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from asgiref.sync import SyncToAsync, iscoroutinefunction

from . import stacks
from .cancellation import NEVER, CancellationToken, CancelReason
from .safetext import ELLIPSIS, visible

_ids = itertools.count(1)
#: Held while a work's token is made: a sync view's thread and the event loop may ask at once.
_TOKEN_LOCK = threading.Lock()
#: Ended requests whose sync view's thread is looked for (see ``Registry.lingering``).
MAX_LINGERING = 100
#: The message of every task cancel the lifecycle sends begins with this (then the reason).
CANCEL_MESSAGE_PREFIX = "django_graceful: "
#: The most characters of a request's path (or route) its label keeps; the rest is cut,
#: with ``…`` at the end (a label is in every snapshot, each heartbeat).
MAX_PATH = 300
#: The most characters of a request's method its label keeps.
MAX_METHOD = 20
#: The most characters of any work's label (a task's or a thread's name).
MAX_WHAT = MAX_PATH + MAX_METHOD + 1


class WorkKind(enum.StrEnum):
    """What a piece of tracked work is (also its name in snapshots)."""

    REQUEST = "request"  # an HTTP request, from its scope to its last byte
    WEBSOCKET = "websocket"  # a websocket connection
    TASK = "task"  # a ``spawn()``ed task
    THREAD = "thread"  # a ``start_thread()`` thread


def request_label(method: object, path: object, *, redact: bool = False) -> str:
    """What a request is called (``Tracked.what``): ``"GET /orders/7/"``, the path decoded
    and without its query string, as the ASGI scope has it; made visible (``safetext``)
    and cut to ``MAX_PATH`` characters with ``…``.

    ``redact`` (``REDACT_PATHS``): no more of the path than its first folder,
    ``"GET /orders/…"`` (``"GET /…"`` for ``/secret-token``), until ``route_label``
    names the request by its route.
    """
    text = str(path)
    if redact:
        first, slash, rest = text.lstrip("/").partition("/")
        text = f"/{first}/{ELLIPSIS if rest else ''}" if slash else f"/{ELLIPSIS if first else ''}"
    return f"{visible(str(method), MAX_METHOD)} {visible(text, MAX_PATH)}"


def route_label(label: str, route: str) -> str:
    """A request's label with its URL route pattern instead of its path (``REDACT_PATHS``):
    ``"GET /orders/<int:id>/"`` for ``label``, ``route`` as Django's ``ResolverMatch.route``."""
    method, _ = request_of(label)
    return f"{method} {visible('/' + route.lstrip('^'), MAX_PATH)}"


def request_of(label: str) -> tuple[str, str]:
    """``request_label``'s ``(method, path)`` back from a request's label."""
    method, _, path = label.partition(" ")
    return method, path


class Response(Protocol):
    """A request's response as its connection serves it (GracefulASGI's ``TrackingSend``)."""

    def refuse(self) -> Awaitable[bool]:
        """Answer the client 503 with ``Connection: close`` if the response has not
        begun; True if it did (at STOPPED, for a request that ignored every cancel)."""
        ...

    def closing(self) -> None:
        """CLOSING began: a response that can end by itself is ended (an endless stream)."""
        ...


class Tracked:
    """One piece of in-flight work (a request, a websocket, a task or a thread).

    Only what every piece of work has is set when it is made; the rest starts at the
    class's defaults below (most work never changes them): tracking a request is on
    every request's path.
    """

    #: The task that runs the view, where it differs from ``task`` (Django 5.2 runs
    #: the view in a task of its own, which a cancel of ``task`` never reaches).
    view_task: asyncio.Task[object] | None = None
    #: Called on the first cancel, before any ``task.cancel()``: lets the work stop the
    #: way it would for its client (e.g. a delivered ``http.disconnect``).
    on_cancel: Callable[[CancelReason], None] | None = None
    #: Called when CLOSING begins: work that can wind down by itself is told to
    #: (a thread's stop event is set; a websocket is closed; for a request, its
    #: ``response.closing()`` is called instead).
    on_closing: Callable[[], None] | None = None
    #: For a request: its response, as the connection serves it (``Response``).
    response: Response | None = None
    #: The thread of a ``start_thread`` item (its stack is read from another thread).
    thread: threading.Thread | None = None
    #: The view's dotted path (a request's: see ``TrackedRequest``).
    view: str | None = None
    #: ``what`` hides the request's path (``REDACT_PATHS``): GracefulMiddleware names the
    #: request by its route once the URL is resolved (``route_label``).
    redacted: bool = False
    #: How many times the lifecycle cancelled it (each cancel after the first one
    #: re-cancels its task).
    cancel_count: int = 0
    #: Why it was first cancelled or told to stop (None while it was not).
    reason: CancelReason | None = None
    #: When the work was first told to stop (``time.monotonic()``).
    told_at: float | None = None
    _token: CancellationToken | None = None
    _deliveries: int = 0
    _held: CancelReason | None = None
    _shield_depth: int = 0
    _shield_ended: asyncio.Event | None = None

    def __init__(
        self,
        kind: WorkKind | str,
        what: object,
        task: asyncio.Task[object] | None = None,
        *,
        on_closing: Callable[[], None] | None = None,
        view: str | None = None,
        redacted: bool = False,
    ) -> None:
        self.kind = kind
        # Whatever named the work (a request's path, a task's name), its label is shown
        # in logs, snapshots and terminals: visible, and bounded.
        self.what = visible(str(what), MAX_WHAT)
        self.task = task
        self.started = time.monotonic()
        self.id = next(_ids)
        if on_closing is not None:
            self.on_closing = on_closing
        if view is not None:
            self.view = view
        if redacted:
            self.redacted = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.kind} {self.what!r}>"

    @property
    def sync_view(self) -> bool:
        """The view is sync: its thread may outlive the request's task (``lingering``)."""
        return False

    @property
    def token(self) -> CancellationToken:
        """The work's cancellation token (made on first use, by whichever thread asks
        first: most work never needs one)."""
        token = self._token
        if token is None:
            with _TOKEN_LOCK:
                token = self._token
                if token is None:
                    # Set before the reason is looked at: a tell() meanwhile (on the
                    # loop) either sees this token or set the reason looked at here.
                    token = self._token = CancellationToken()
                    if self.reason is not None:
                        token.cancel(self.reason)
        return token

    def tell(self, reason: CancelReason) -> None:
        """Record why the work should stop and set its token, without cancelling a task."""
        if self.reason is None:
            self.reason = reason
            self.told_at = time.monotonic()
        if self._token is not None:
            self._token.cancel(reason)

    @property
    def token_reason(self) -> CancelReason | None:
        """The reason set on the work's token (without making one): a token can be told
        by itself, e.g. by a sync view's own timeout."""
        return self._token.reason if self._token is not None else None

    @property
    def stop_reason(self) -> CancelReason | None:
        """Why the work was told to stop: by a cancel, or only through its token."""
        return self.reason or self.token_reason

    @property
    def told(self) -> bool:
        """The work was told to stop (a cancel, or only its token: a client that left)."""
        token = self._token
        return self.reason is not None or (token is not None and token.reason is not None)

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    def cancel(self, reason: CancelReason) -> None:
        """Ask the work to stop; every further call cancels its task again.

        While shielded the cancel is held, and delivered when the shield ends.
        """
        self.cancel_count += 1
        self.tell(reason)
        if self.shielded:
            self._held = reason
            return
        self._deliver(reason)

    def _deliver(self, reason: CancelReason) -> None:
        self._deliveries += 1
        if self._deliveries == 1 and self.on_cancel is not None:
            self.on_cancel(reason)
            return
        for task in (self.view_task, self.task):
            if task is not None and not task.done():
                task.cancel(f"{CANCEL_MESSAGE_PREFIX}{reason}")
                return

    @property
    def shielded(self) -> bool:
        return self._shield_depth > 0

    def begin_shield(self) -> None:
        if self._shield_depth == 0:
            self._shield_ended = asyncio.Event()
        self._shield_depth += 1

    def end_shield(self, *, expired: bool = False) -> None:
        """Leave one shield (all of them if it ``expired``); deliver what was held."""
        if self._shield_depth == 0:
            return
        self._shield_depth = 0 if expired else self._shield_depth - 1
        if self._shield_depth == 0:
            if self._shield_ended is not None:
                self._shield_ended.set()
            held, self._held = self._held, None
            if held is not None:
                self._deliver(held)

    async def wait_unshielded(self) -> None:
        """Return once no shield is up (at once if none is)."""
        while self.shielded and self._shield_ended is not None:
            await self._shield_ended.wait()

    @property
    def innermost_task(self) -> asyncio.Task[object] | None:
        """The task closest to the work: the view's own, while it runs."""
        if self.view_task is not None and not self.view_task.done():
            return self.view_task
        return self.task

    def frames(
        self, frames_by_thread: dict[int, FrameType], sync_calls: dict[int, int]
    ) -> tuple[list[FrameType], bool]:
        """Where the work is, outermost frame first, and whether that is a sync thread
        it waits for (``stacks.thread_frames()`` and ``stacks.sync_calls()`` of it).

        A ``start_thread`` thread: its stack. Else the innermost task's await chain; or,
        when that awaits a ``sync_to_async`` call, or is gone (a sync view whose task
        asgiref let go) while a thread still runs the request's view, that thread's
        stack (Django's handler may wait for a sync call queued behind it).
        """
        if self.thread is not None:
            if not self.thread.is_alive():
                return [], False
            return stacks.stack(frames_by_thread.get(self.thread.ident or 0)), False
        task = self.innermost_task
        chain = [] if task is None or task.done() else stacks.await_chain(task.get_coro())
        call = stacks.awaited_sync_call(chain)
        thread = sync_calls.get(id(call)) if call is not None else None
        if thread is None:
            thread = self.sync_thread(sync_calls)
        if thread is not None:
            return stacks.stack(frames_by_thread.get(thread)), True
        return chain, False

    def sync_thread(self, sync_calls: dict[int, int]) -> int | None:
        """The thread running a sync call made for this work (its token travels in the
        call's arguments), from ``stacks.sync_calls()``; None if there is none."""
        return sync_calls.get(id(self._token)) if self._token is not None else None

    def describe(self) -> str:
        state = f"cancelled {self.cancel_count}x" if self.cancel_count else "running"
        if self.shielded:
            state += ", shielded"
        view = f", view {self.view}" if self.view else ""
        return f"{self.kind} {self.what}{view} ({state}, {self.age:.1f} s old)"


class TrackedRequest(Tracked):
    """An HTTP request's work. Its label (``what``) and its view are made when first
    read (a snapshot, a log line), not on every request's path: the view comes from the
    Django request GracefulMiddleware gives it (``request``) once Django resolved its URL
    (and with ``REDACT_PATHS``, the label from its route then)."""

    #: The Django request (GracefulMiddleware), read for its ``resolver_match``.
    request: Any = None
    #: Its response streams without end (``endless()``): True; False: opted out; None:
    #: its content type decides (``text/event-stream`` is endless).
    endless: bool | None = None
    #: The chunk an endless stream ends with (``endless(last=...)``).
    last_chunk: bytes = b""
    _what: str | None = None
    _view: str | None = None
    kind: WorkKind | str = WorkKind.REQUEST

    def __init__(
        self,
        method: object,
        path: object,
        task: asyncio.Task[object] | None = None,
        *,
        redacted: bool = False,
    ) -> None:
        self._method = method
        self._path = path
        self.task = task
        self.started = time.monotonic()
        self.id = next(_ids)
        if redacted:
            self.redacted = True

    @property
    def what(self) -> str:
        """``request_label``; with ``REDACT_PATHS``, ``route_label`` once resolved."""
        what = self._what
        if what is None:
            what = request_label(self._method, self._path, redact=self.redacted)
            if not self.redacted:
                self._what = what
            else:
                route = getattr(self._match(), "route", None)
                if isinstance(route, str):
                    what = self._what = route_label(what, route)
        return what

    @what.setter
    def what(self, value: str) -> None:
        self._what = visible(str(value), MAX_WHAT)

    @property
    def view(self) -> str | None:
        """The view's dotted path, as Django's resolver names it, once resolved."""
        view = self._view
        if view is None:
            match = self._match()
            if match is not None:
                view = self._view = view_path(match)
        return view

    @view.setter
    def view(self, value: str | None) -> None:
        self._view = value

    @property
    def sync_view(self) -> bool:
        func = getattr(self._match(), "func", None)
        return func is not None and not iscoroutinefunction(func)

    def _match(self) -> Any:
        """The request's ``ResolverMatch``, once Django resolved its URL."""
        return getattr(self.request, "resolver_match", None)


def view_path(match: Any) -> str:
    """The view's dotted path, as Django's resolver names it (a class-based view's class)."""
    path = getattr(match, "_func_path", None)
    if isinstance(path, str):
        return path
    view = getattr(match.func, "view_class", match.func)
    return f"{getattr(view, '__module__', '?')}.{getattr(view, '__qualname__', repr(view))}"


class Registry:
    """In-flight work of one process; calls ``on_empty`` when the last item leaves."""

    def __init__(self, on_empty: Callable[[], None] | None = None) -> None:
        self._items: dict[int, Tracked] = {}
        #: Called when the last item leaves (may be set, and unset, at any time).
        self.on_empty = on_empty
        self._lingering: dict[int, Tracked] = {}

    def add(self, item: Tracked) -> Tracked:
        self._items[item.id] = item
        return item

    def discard(self, item: Tracked) -> None:
        if self._items.pop(item.id, None) is None:
            return
        # Work never told to stop (most of it) has neither a reason nor a token yet.
        if (
            (item.reason is not None or item._token is not None)
            and item.told
            and item.sync_view
            and len(self._lingering) < MAX_LINGERING
        ):
            self._lingering[item.id] = item
        if not self._items and self.on_empty is not None:
            self.on_empty()

    def lingering(self) -> list[Tracked]:
        """Sync views told to stop whose request has ended: asgiref lets the task of a
        cancelled sync view go while its thread runs on. Snapshots and the shutdown
        report look for their threads (``lingering_threads``)."""
        return list(self._lingering.values())

    def lingering_threads(self, sync_calls: dict[int, int] | None = None) -> list[Tracked]:
        """The ``lingering`` requests whose thread still runs (the others are forgotten);
        ``sync_calls`` as ``stacks.sync_calls()`` gives it, if the caller has it already."""
        lingering = self.lingering()
        if not lingering:
            return []
        calls = stacks.sync_calls(stacks.thread_frames()) if sync_calls is None else sync_calls
        running = []
        for item in lingering:
            if item.sync_thread(calls) is not None:
                running.append(item)
            else:
                self._lingering.pop(item.id, None)
        return running

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Tracked]:
        return iter(list(self._items.values()))


_current_item: contextvars.ContextVar[Tracked | None] = contextvars.ContextVar(
    "django_graceful_item", default=None
)

#: The attribute under which a request's ``ThreadSensitiveContext`` carries its tracked
#: work (``_serving/threads.py``'s ``RequestContext``).
CONTEXT_ITEM = "django_graceful_item"


def current_item() -> Tracked | None:
    """The tracked work this code runs for: the request (GracefulASGI's, for the whole
    request), the ``spawn()``ed task; None elsewhere.

    A request's is carried by its ``ThreadSensitiveContext`` (asgiref's context variable,
    which every Django request under ASGI sets anyway): one more context variable would
    cost each of the request's ``sync_to_async`` calls, which walk them all. Other work
    (a spawned task, a WSGI request, an app other than Django's handler) sets
    ``_current_item``, which comes first."""
    item = _current_item.get()
    if item is None:
        item = getattr(SyncToAsync.thread_sensitive_context.get(None), CONTEXT_ITEM, None)
    return item


def current_cancellation() -> CancellationToken:
    """The token of the request (or tracked task) this code runs for.

    Outside of one it is a token that is never cancelled. asgiref carries it into
    the thread of a sync view (it is the current work's, in the context's variables).
    """
    item = current_item()
    return NEVER if item is None else item.token


def use_item(item: Tracked | None) -> contextvars.Token[Tracked | None]:
    return _current_item.set(item)


def reset_item(previous: contextvars.Token[Tracked | None]) -> None:
    _current_item.reset(previous)
