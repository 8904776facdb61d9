"""A request's sync code on a reused thread (``GRACEFUL["REUSE_SYNC_THREADS"]``).

Django's ASGI handler runs each request in a ``ThreadSensitiveContext`` of its own: the
request's thread-sensitive sync code (sync middleware and views, ``request_started`` /
``request_finished`` receivers, ``sync_to_async`` calls) runs on one thread, never shared
with another request at the same time. asgiref starts that thread for the request and
joins it at the end, which costs more CPU than the rest of a small request. Here the
context is entered first, with a thread taken from a pool of idle ones; Django's own
context then finds it and adds nothing. When the request ends the thread goes back to
the pool once it has nothing left to run: a sync view whose client left (asgiref lets its
call go) keeps its thread until the view ends, and no other request gets it meanwhile.

A thread goes back as soon as its request has nothing left to run there: once the
response was sent and closed on it (``request_finished``, the request's last sync call),
from that thread itself, before the request's task has even heard of the close. And a
request that finds no idle thread while another request's response is sent and only
its close is left waits for that thread (``FINISHING_WAIT`` at most) rather than start
one: a client sends its next request as soon as it has read the response, often before
the close ran, and each new thread would open a database connection of its own. So
threads (and persistent connections) stay bounded by the requests in flight. A request
never waits behind a view that is still running.

What changes for the app is what changes under a WSGI server's thread pool: a thread
serves many requests one after the other, so what a request leaves in a thread-local
stays for the next one, and a persistent database connection (``CONN_MAX_AGE``) is
reused rather than opened per request. A task the request started that outlives it and
makes a thread-sensitive call gets a thread of its own, as with Django's context.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import connections

from .._core import wsgi
from .._core.phases import Phase
from .._core.registry import Tracked, current_item

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: Idle threads kept unless told (``IDLE_SYNC_THREADS``): the pool grows with the
#: requests in flight at once, as the threads Django starts do, and shrinks back to this
#: after a burst.
MAX_IDLE = 8
#: Seconds a thread beyond ``MAX_IDLE`` stays idle before it ends: under a steady load
#: with more requests in flight than that, a thread that comes back is taken again within
#: milliseconds, and ending it would only start another (and open another database
#: connection); after a burst the surplus ends this long after its last request.
SURPLUS_IDLE = 2.0
#: How long (s) a request that finds no idle thread waits for one whose request has
#: only its response's close left (``request_finished`` receivers, which take well under
#: a millisecond), before it starts a thread of its own: a wait for bookkeeping, never for
#: a view, and bounded in case a receiver is slow.
FINISHING_WAIT = 0.2
#: Tells the threads apart in logs and stacks: django_graceful-sync-<n>_0.
_numbers = itertools.count(1)
#: ``.thread``: the RequestThread the current thread is, in its own thread.
_local = threading.local()


class Response(Protocol):
    """What a thread reads of its request's response (``TrackingSend``)."""

    @property
    def sent(self) -> bool:
        """Whether the response's last message was sent."""


class RequestThread(ThreadPoolExecutor):
    """One thread for one request at a time, that knows when it has nothing to run.

    Lent to a request (its owner) and let go by it, once: by the request's end
    (``release``), or by the thread itself when the request's response was closed on it
    (``request_closed``) and that call has ended, whichever comes first."""

    def __init__(self) -> None:
        name = f"django_graceful-sync-{next(_numbers)}"
        super().__init__(max_workers=1, thread_name_prefix=name, initializer=self._bind)
        # Guards _pending, _on_idle and the loan (_owner, _response, _closed, _on_closed),
        # changed by the loop's thread and by this one.
        self._lock = threading.Lock()
        self._pending = 0
        self._on_idle: Callable[[RequestThread], None] | None = None
        self._owner: object | None = None
        self._response: Response | None = None
        self._closed = False
        self._on_closed: Callable[[RequestThread], None] | None = None

    def _bind(self) -> None:
        _local.thread = self

    def lend(
        self,
        owner: object,
        response: Response | None = None,
        on_closed: Callable[[RequestThread], None] | None = None,
    ) -> None:
        """Serve ``owner``'s request; ``on_closed(self)`` runs here once its ``response``
        was sent and closed here and the call that closed it ended."""
        with self._lock:
            self._owner, self._response, self._on_closed = owner, response, on_closed
            self._closed = False

    @property
    def finishing(self) -> bool:
        """Lent to a request whose response was sent: only its close is left."""
        response = self._response
        return self._owner is not None and response is not None and response.sent

    def request_closed(self) -> None:
        """On this thread, from ``request_finished``: its request's response, sent, was
        closed (and not, say, a test client's request run inside a view)."""
        if self.finishing:
            self._closed = True

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._pending += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: object) -> None:
        # On this thread as a call ends, before the loop hears of its result (the first
        # done-callback: asyncio's comes after it).
        closed = None
        with self._lock:
            self._pending -= 1
            if self._pending:
                return
            callback, self._on_idle = self._on_idle, None
            if callback is None and self._closed and self._on_closed is not None:
                closed = self._on_closed
                self._owner = self._response = self._on_closed = None
        if callback is not None:
            callback(self)
        elif closed is not None:
            closed(self)

    def release(self, owner: object, callback: Callable[[RequestThread], None]) -> bool:
        """``owner`` lets go: ``callback(self)`` once nothing submitted is still pending
        (now, or from this thread when its last call ends: a call its request let go).
        False, and no callback, when it was let go already (``request_closed``)."""
        with self._lock:
            if self._owner is not owner:
                return False
            self._owner = self._response = self._on_closed = None
            if self._pending:
                self._on_idle = callback
                return True
        callback(self)
        return True

    @property
    def idle(self) -> bool:
        return self._pending == 0


#: Whether ``request_ended`` is connected to ``request_finished`` (``attend_request_ends``).
attending = False


def attend_request_ends(needed: bool) -> None:
    """Connect ``request_ended`` to ``request_finished`` (``needed``), or disconnect it.

    Django walks a signal's receivers on every request, whether they have work or not:
    connected from the start (the app's ``ready``), and wherever a request may need it
    (a reused thread, a WSGI request through GracefulMiddleware); disconnected by
    GracefulASGI while it serves with ``REUSE_SYNC_THREADS`` off, where each request's
    sync code has a thread of its own that ends with it (nothing to do at its end)."""
    global attending
    from django.core.signals import request_finished

    if needed:
        request_finished.connect(request_ended, dispatch_uid=REQUEST_ENDED_UID)
    else:
        request_finished.disconnect(dispatch_uid=REQUEST_ENDED_UID)
    attending = needed


REQUEST_ENDED_UID = "django_graceful.request_ended"


def request_ended(**_: Any) -> None:
    """``request_finished`` (one receiver: Django walks its receivers on every request),
    after Django's own: the thread's connections are left clean; on a reused request
    thread, the thread is let go (its request's response was closed)."""
    thread = getattr(_local, "thread", None)
    if thread is not None:
        leave_connections_clean()
        thread.request_closed()
    elif current_item() is None or wsgi.in_request():
        # Without GracefulASGI, or WSGI: the thread serves on.
        leave_connections_clean()
    # else a request under GracefulASGI whose sync code has a thread of its own
    # (REUSE_SYNC_THREADS off): the thread ends with the request, and no later request
    # finds what it left.


class SyncThreads:
    """The idle request threads of this process."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        #: Idle threads, each with the ``time.monotonic()`` it came back at, the oldest
        #: first (a request takes the last one back: the one most recently used).
        self._idle: list[tuple[RequestThread, float]] = []
        #: Ends the surplus idle threads once they have been idle ``SURPLUS_IDLE``.
        self._trimmer: threading.Timer | None = None
        #: Lent to a request: how many of them are finishing (``take_soon``).
        self._lent: set[RequestThread] = set()
        #: Requests waiting for a finishing thread, in order, each with its loop.
        self._waiting: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[RequestThread]]]
        self._waiting = deque()
        # Guards _idle, _trimmer, _lent and _waiting: threads come back from their own
        # threads.
        self._lock = threading.Lock()
        #: How many idle threads are kept (``IDLE_SYNC_THREADS``).
        self.max_idle = max_idle
        #: Whether this cycle is served already (``serve_cycle``).
        self.watching = False

    def take(self) -> RequestThread:
        """An idle thread, or a new one."""
        with self._lock:
            thread = self._idle.pop()[0] if self._idle else RequestThread()
            self._lent.add(thread)
        return thread

    async def take_soon(self) -> RequestThread:
        """An idle thread; or, when a thread lent to another request is finishing and no
        other request waits for it, that thread as soon as it is back (``FINISHING_WAIT``
        at most); or a new one."""
        with self._lock:
            finishing = sum(thread.finishing for thread in self._lent)
            if self._idle or finishing <= len(self._waiting):
                future = None
            else:
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                self._waiting.append((loop, future))
        if future is not None:
            try:
                await asyncio.wait((future,), timeout=FINISHING_WAIT)
            except BaseException:
                if (handed := self._stop_waiting(future)) is not None:
                    self.put_back(handed)
                raise
            if (handed := self._stop_waiting(future)) is not None:
                with self._lock:
                    self._lent.add(handed)
                return handed
        return self.take()

    def _stop_waiting(self, future: asyncio.Future[RequestThread]) -> RequestThread | None:
        """The thread handed to ``future``, or None: no longer waited for."""
        with self._lock:
            try:
                self._waiting.remove((asyncio.get_running_loop(), future))
            except ValueError:
                pass
        if future.cancel():
            return None  # a thread handed later goes back (_hand)
        return future.result()

    def give_back(self, thread: RequestThread, owner: object = None) -> None:
        """``owner`` lets ``thread`` go: back to the pool once it has nothing to run (never
        handed on while busy); nothing when it went back already (``request_closed``)."""
        thread.release(owner, self.put_back)

    def put_back(self, thread: RequestThread) -> None:
        """``thread`` has nothing to run: to the first request waiting, or to the pool
        (from any thread)."""
        with self._lock:
            self._lent.discard(thread)
            while self._waiting:
                loop, future = self._waiting.popleft()
                if not future.done():
                    break
            else:
                self._idle.append((thread, time.monotonic()))
                self._trim()
                return
        try:
            loop.call_soon_threadsafe(self._hand, future, thread)
        except RuntimeError:  # its loop is closed
            self.put_back(thread)

    def _trim(self) -> None:
        """End the idle threads beyond ``max_idle`` that have been idle ``SURPLUS_IDLE``;
        come back for the others when they will have been (under ``_lock``)."""
        now = time.monotonic()
        while len(self._idle) > self.max_idle and self._idle[0][1] <= now - SURPLUS_IDLE:
            end(self._idle.pop(0)[0])
        if len(self._idle) > self.max_idle and self._trimmer is None:
            self._trimmer = threading.Timer(self._idle[0][1] + SURPLUS_IDLE - now, self._trim_later)
            self._trimmer.daemon = True
            self._trimmer.start()

    def _trim_later(self) -> None:
        with self._lock:
            self._trimmer = None
            self._trim()

    def _hand(self, future: asyncio.Future[RequestThread], thread: RequestThread) -> None:
        if future.done():  # it stopped waiting meanwhile
            self.put_back(thread)
        else:
            future.set_result(thread)

    def serve_cycle(self, lifecycle: Lifecycle) -> None:
        """Once per lifecycle cycle, at its first request: keep the idle threads its
        settings allow (``IDLE_SYNC_THREADS``), and close them at its STOPPED."""
        self.watching = True
        self.max_idle = lifecycle.settings.IDLE_SYNC_THREADS
        lifecycle.on_phase(self._close_when_stopped, this_cycle=True)

    def _close_when_stopped(self, phase: Phase) -> None:
        if phase == Phase.STOPPED:
            self.watching = False
            self.close()

    def close(self) -> None:
        """End the idle threads, each once it has closed its database connections, and
        close Django's connection pools: a persistent connection (``CONN_MAX_AGE``) or a
        pooled one would otherwise just drop at the process's end, which the database
        counts as a client gone without a goodbye."""
        with self._lock:
            idle, self._idle = self._idle, []
            if self._trimmer is not None:
                self._trimmer.cancel()
                self._trimmer = None
        for thread, _ in idle:
            end(thread)
        close_pools()

    def __len__(self) -> int:
        return len(self._idle)


class RequestContext(ThreadSensitiveContext):
    """A request's ``ThreadSensitiveContext`` (the one Django's handler enters for each
    request), carrying its tracked work: ``current_item()`` finds it there."""

    def __init__(self, item: Tracked | None = None) -> None:
        super().__init__()
        self.django_graceful_item = item  # CONTEXT_ITEM


class ReusedThreadContext(RequestContext):
    """``ThreadSensitiveContext`` whose thread comes from ``threads`` and goes back."""

    def __init__(
        self, threads: SyncThreads, response: Response | None = None, item: Tracked | None = None
    ) -> None:
        super().__init__(item)
        self._threads = threads
        self._response = response
        self._thread: RequestThread | None = None

    async def __aenter__(self) -> ReusedThreadContext:
        if SyncToAsync.thread_sensitive_context.get(None) is None:  # the request's own
            thread = await self._threads.take_soon()
            thread.lend(self, self._response, self._closed_early)
            self._thread = thread
        await super().__aenter__()
        if self._thread is not None:
            SyncToAsync.context_to_thread_executor[self] = self._thread
        return self

    async def __aexit__(self, *exc: object) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            # Taken out before asgiref's exit, which would shut it down.
            self._unmap(thread)
            self._threads.give_back(thread, self)
        await super().__aexit__(*exc)

    def _closed_early(self, thread: RequestThread) -> None:
        """On ``thread``: the response was closed, the request has nothing left to run
        there. A sync call its task still makes (one it started that outlives it) gets a
        thread of its own, as after the request's end."""
        self._unmap(thread)
        self._threads.put_back(thread)

    def _unmap(self, thread: RequestThread) -> None:
        executors = SyncToAsync.context_to_thread_executor
        if executors.get(self) is thread:
            executors.pop(self, None)


def end(thread: RequestThread) -> None:
    """End ``thread`` once it has closed its database connections: a persistent one
    would otherwise stay open, idle, until the thread's objects are collected."""
    thread.submit(close_connections)
    thread.shutdown(wait=False)


def close_connections() -> None:
    """Close this thread's database connections."""
    connections.close_all()


def close_pools() -> None:
    """Close Django's connection pools (``OPTIONS["pool"]``, PostgreSQL, Django >= 5.1):
    their idle connections, and each connection in use as it is given back."""
    for alias in connections:
        connection = connections[alias]
        if not connection.settings_dict.get("OPTIONS", {}).get("pool"):
            continue
        try:
            connection.close_pool()  # type: ignore[attr-defined]
        except Exception:
            logger.warning("could not close the connection pool of %r", alias, exc_info=True)


def leave_connections_clean() -> None:
    """At ``request_finished``, on the request's thread, after Django's own receiver: each
    database connection of the thread is left out of any transaction, so that the next
    request on this thread starts as on a thread of its own.

    A connection still inside an atomic block (entered and never left) is closed, which
    rolls its transaction back, with a warning naming the view. Django's receiver closes
    such a connection but leaves it marked as inside the block: on a thread that serves
    on (reused here, or a WSGI server's), every later query there would fail with "Cannot
    operate on a closed database". The rest of the block's state (its savepoints, commit
    hooks, rollback mark, the blocks themselves) goes too, not only at the next
    connect(): an outermost ``atomic(durable=True)`` there would find the block still open
    and raise.

    A connection left with autocommit off is one Django's receiver closes, unless it
    cannot: an in-memory SQLite database (a test's), which Django never closes. Its
    transaction is rolled back and autocommit turned back on, or the next request there
    would run in it and never commit."""
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            _close_atomic_block(connection)
        elif (
            connection.connection is not None
            and connection.autocommit != connection.settings_dict["AUTOCOMMIT"]
        ):
            _restore_autocommit(connection)


def _close_atomic_block(connection: Any) -> None:
    request = current_item()
    logger.warning(
        "%s left a transaction open on database %r (an atomic block it never left): "
        "rolled back and closed",
        (request.view or request.what) if request is not None else "a request",
        connection.alias,
    )
    # Out of the block Django still counts, so that close() closes.
    connection.in_atomic_block = False
    connection.closed_in_transaction = False
    try:
        connection.close()
    except Exception:
        logger.debug("could not close database %r", connection.alias, exc_info=True)
    finally:
        connection.connection = None
        connection.atomic_blocks = []
        connection.savepoint_ids = []
        connection.needs_rollback = False
        connection.run_on_commit = []


def _restore_autocommit(connection: Any) -> None:
    try:
        connection.rollback()
        connection.set_autocommit(connection.settings_dict["AUTOCOMMIT"])
    except Exception:
        logger.debug("could not roll back database %r", connection.alias, exc_info=True)
        connection.connection = None  # the next request connects anew
