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

What changes for the app is what changes under a WSGI server's thread pool: a thread
serves many requests one after the other, so what a request leaves in a thread-local
stays for the next one, and a persistent database connection (``CONN_MAX_AGE``) is
reused rather than opened per request. A task the request started that outlives it and
makes a thread-sensitive call gets a thread of its own, as with Django's context.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext

from .._core.phases import Phase
from .._core.registry import current_item

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: Idle threads kept unless told (``IDLE_SYNC_THREADS``); more are ended as they come
#: back: the pool grows with the requests in flight at once, as the threads Django starts
#: do, and shrinks back after a burst.
MAX_IDLE = 8
#: Tells the threads apart in logs and stacks: django_graceful-sync-<n>_0.
_numbers = itertools.count(1)


class RequestThread(ThreadPoolExecutor):
    """One thread for one request at a time, that knows when it has nothing to run."""

    def __init__(self) -> None:
        name = f"django_graceful-sync-{next(_numbers)}"
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        self._on_idle: Callable[[RequestThread], None] | None = None

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
        with self._lock:
            self._pending -= 1
            callback, self._on_idle = (self._on_idle, None) if not self._pending else (None, None)
        if callback is not None:
            callback(self)

    def when_idle(self, callback: Callable[[RequestThread], None]) -> None:
        """Call ``callback(self)`` once nothing submitted is still pending: now, or from
        this thread when its last call ends (a result the loop got a moment before the
        call's own bookkeeping, or a call its request let go)."""
        with self._lock:
            if self._pending:
                self._on_idle = callback
                return
        callback(self)

    @property
    def idle(self) -> bool:
        return self._pending == 0


class SyncThreads:
    """The idle request threads of this process."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self._idle: list[RequestThread] = []
        self._lock = threading.Lock()
        #: How many idle threads are kept (``IDLE_SYNC_THREADS``).
        self.max_idle = max_idle
        #: Whether this cycle is served already (``serve_cycle``).
        self.watching = False

    def take(self) -> RequestThread:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return RequestThread()

    def give_back(self, thread: RequestThread) -> None:
        """Back to the pool once it has nothing to run (never handed on while busy)."""
        thread.when_idle(self._put_back)

    def _put_back(self, thread: RequestThread) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(thread)
                return
        thread.shutdown(wait=False)

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
        """End the idle threads, each once it has closed its database connections (a
        persistent one, ``CONN_MAX_AGE``, would otherwise just drop at the process's end)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for thread in idle:
            thread.submit(close_connections)
            thread.shutdown(wait=False)

    def __len__(self) -> int:
        return len(self._idle)


class ReusedThreadContext(ThreadSensitiveContext):
    """``ThreadSensitiveContext`` whose thread comes from ``threads`` and goes back."""

    def __init__(self, threads: SyncThreads) -> None:
        super().__init__()
        self._threads = threads
        self._thread: RequestThread | None = None

    async def __aenter__(self) -> ReusedThreadContext:
        await super().__aenter__()
        if self.token is not None:  # the outermost context: the request's
            self._thread = self._threads.take()
            SyncToAsync.context_to_thread_executor[self] = self._thread
        return self

    async def __aexit__(self, *exc: object) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            # Taken out before asgiref's exit, which would shut it down.
            SyncToAsync.context_to_thread_executor.pop(self, None)
            self._threads.give_back(thread)
        await super().__aexit__(*exc)


def close_connections() -> None:
    """Close this thread's database connections."""
    from django.db import connections

    connections.close_all()


def leave_connections_clean(**_: Any) -> None:
    """``request_finished``, on the request's thread, after Django's own receiver: each
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
    from django.db import connections

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
