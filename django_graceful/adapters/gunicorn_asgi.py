"""Gunicorn's native asgi worker (``--worker-class asgi``): hung requests answered, exit bounded.

The worker (``gunicorn/workers/gasgi.py``, gunicorn >= 24; 27.0.1 read and run) handles
its signals in the event loop: SIGTERM sets ``alive = False``, SIGQUIT/SIGINT also set
``_quick_shutdown``. Its main loop (``_serve``) sends the heartbeat and looks at ``alive``
once a second; once it is False, ``_shutdown`` closes the listening servers, waits up to
``graceful_timeout`` for every open connection (``nr_conns``, idle keep-alive ones too),
sends ``lifespan.shutdown`` (not after a quick stop), and ``_cleanup`` then cancels every
task and waits for them with no bound: a task that swallows its cancel holds the worker
until the arbiter's SIGKILL. ``max_requests`` sets ``alive = False`` from a connection.

Besides gunicorn's shared stops (``adapters/gunicorn.py``), this adapter:

- at STOPPED answers each request that ignored every cancel with a 503 (through the
  ``send`` of gunicorn's ``ASGIProtocol._handle_http_request`` running it, when its
  response had not begun) and closes its connection, closes idle keep-alive connections
  (``ASGIProtocol._keepalive_timeout``), then hands the stop to gunicorn and wakes its main
  loop (the ``asyncio.sleep`` in ``_serve``) rather than letting it sleep out its second;
- guards ``_cleanup``: if tasks still ignore their cancel ``TEARDOWN_GRACE`` s after it
  began, the worker exits by itself (status 0, as gunicorn's own exit), without the
  watchdog (after a quick stop, ``_quick_shutdown``, gunicorn bounds that wait to 1 s in
  a task of its own: only our hung work is waited for then).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Iterator
from types import CodeType, FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._core.process import exit_now
from .._serving.protocol import SHUTTING_DOWN_BODY, refuse_http
from ._compat import fall_back
from .base import ServerAdapter
from .gunicorn import GunicornStops, find_worker, gunicorn_problem, gunicorn_version

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: The oldest gunicorn tested with the native asgi worker (it first shipped in 24).
MIN_VERSION = (27,)
#: Seconds the other tasks get to honour gunicorn's last cancel before the worker exits.
TEARDOWN_GRACE = 0.5


def running(modules: dict[str, ModuleType]) -> bool:
    """Is this process a worker of gunicorn's native asgi worker class?"""
    worker_class = getattr(modules.get("gunicorn.workers.gasgi"), "ASGIWorker", None)
    return worker_class is not None and isinstance(find_worker(modules), worker_class)


class _Codes:
    """The code objects of gunicorn's coroutines that this adapter looks for in tasks."""

    def __init__(self, serve: CodeType, connection: CodeType, request: CodeType) -> None:
        self.serve = serve
        self.connection = connection
        self.request = request

    @staticmethod
    def find(worker: Any) -> _Codes | None:
        protocol_class = getattr(sys.modules.get("gunicorn.asgi.protocol"), "ASGIProtocol", None)
        codes = [
            getattr(getattr(owner, name, None), "__code__", None)
            for owner, name in (
                (type(worker), "_serve"),
                (protocol_class, "_handle_connection"),
                (protocol_class, "_handle_http_request"),
            )
        ]
        if not all(isinstance(code, CodeType) for code in codes):
            return None
        return _Codes(*codes)  # type: ignore[arg-type]


def _unsupported(worker: Any, codes: _Codes | None) -> str | None:
    """Why the adapter cannot work with this gunicorn asgi worker, or None."""
    problem = gunicorn_problem(worker, gunicorn_version(), MIN_VERSION)
    if problem is not None:
        return problem
    if codes is None or not (
        isinstance(getattr(worker, "servers", None), list)
        and callable(getattr(worker, "handle_quit_signal", None))
    ):
        return (
            "its asgi worker has no _serve / servers / handle_quit_signal, or its "
            "ASGIProtocol no _handle_connection / _handle_http_request"
        )
    return None


def _frames(task: asyncio.Task[Any]) -> Iterator[FrameType]:
    """The frames of the coroutines a task is awaiting, outermost first."""
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None)
        if frame is not None:
            yield frame
        awaited = getattr(awaited, "cr_await", None)


def _frame_of(task: asyncio.Task[Any], code: CodeType) -> FrameType | None:
    return next((f for f in _frames(task) if f.f_code is code), None)


class Adapter(GunicornStops, ServerAdapter):
    name = "gunicorn-asgi"

    def __init__(self) -> None:
        super().__init__()
        self._codes: _Codes | None = None

    def engage(self, lifecycle: Lifecycle) -> None:
        worker = find_worker(sys.modules)
        codes = _Codes.find(worker) if worker is not None else None
        problem = _unsupported(worker, codes)
        super().engage(lifecycle)
        if problem is not None:
            fall_back(
                "gunicorn (asgi worker)",
                problem,
                "gunicorn waits for hung requests until its SIGKILL after graceful_timeout",
            )
            return
        self._codes = codes
        self.engage_gunicorn(lifecycle, worker)
        assert lifecycle.loop is not None
        self.keep(
            lifecycle.loop.create_task(
                self._guard_cleanup(),
                name="django_graceful gunicorn cleanup guard",
                context=contextvars.Context(),
            )
        )

    # -- STOPPED ----------------------------------------------------------------------

    def stopped(self) -> None:
        if self.worker is None or self.lifecycle is None or self.lifecycle.loop is None:
            super().stopped()
            return
        self.keep(self.lifecycle.loop.create_task(self._close_then_release()))

    async def _close_then_release(self) -> None:
        try:
            hung, answered = await self._answer_hung()
            if hung:
                logger.warning(
                    "gunicorn: closed the connection of %d hung request(s), %d of them after a 503",
                    hung,
                    answered,
                )
            self._close_idle()
        finally:
            self.release()

    def _tasks(self) -> set[asyncio.Task[Any]]:
        assert self.lifecycle is not None and self.lifecycle.loop is not None
        return asyncio.all_tasks(self.lifecycle.loop)

    async def _answer_hung(self) -> tuple[int, int]:
        """503 + close for each request that ignored every cancel; (closed, answered)."""
        assert self.lifecycle is not None and self._codes is not None
        closed = answered = 0
        for item in list(self.lifecycle.registry):
            task = item.task
            if task is None or task.done():
                continue
            frame = _frame_of(task, self._codes.request) or _frame_of(task, self._codes.connection)
            if frame is None:
                continue
            local = frame.f_locals
            protocol = local.get("self")
            if protocol is None or getattr(protocol, "_closed", True):
                continue
            send = local.get("send")
            if frame.f_code is self._codes.request and callable(send):
                if not local.get("response_started", True):
                    try:
                        await refuse_http(send, SHUTTING_DOWN_BODY)
                        answered += 1
                    except Exception:
                        logger.debug("could not answer a hung request", exc_info=True)
            close = getattr(protocol, "_close_transport", None)
            if callable(close):
                close()
                closed += 1
        return closed, answered

    def _close_idle(self) -> None:
        """Close the keep-alive connections that wait for a next request: gunicorn would
        wait for them (up to ``keepalive``) before it sends ``lifespan.shutdown``."""
        assert self._codes is not None
        for task in self._tasks():
            frame = _frame_of(task, self._codes.connection)
            protocol = frame.f_locals.get("self") if frame is not None else None
            if (
                protocol is not None
                and getattr(protocol, "_awaiting_request", False)
                and not getattr(protocol, "_finishing_calls", True)
                and callable(getattr(protocol, "_keepalive_timeout", None))
            ):
                protocol._keepalive_timeout()

    # -- the stop itself --------------------------------------------------------------

    def _quick_release(self) -> None:
        self.worker.handle_quit_signal()

    def _stop_accepting(self) -> None:
        for server in self.worker.servers:
            server.close()

    def _stop_now(self) -> None:
        """Wake gunicorn's main loop from its one-second sleep: it sees ``alive`` now."""
        assert self._codes is not None
        for task in self._tasks():
            coro: Any = task.get_coro()
            if getattr(coro, "cr_code", None) is not self._codes.serve:
                continue
            sleeping: Any = getattr(coro, "cr_await", None)
            if getattr(sleeping, "cr_code", None) is asyncio.sleep.__code__:
                future = sleeping.cr_frame.f_locals.get("future")
                if isinstance(future, asyncio.Future) and not future.done():
                    future.cancel()  # _serve takes the CancelledError as "stop now"

    async def _guard_cleanup(self) -> None:
        """Wait for gunicorn's ``_cleanup`` (it cancels every task); exit if tasks would
        hang it."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if not self._released:
                raise
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            if getattr(self.worker, "_quick_shutdown", False):
                # After a quick stop gunicorn bounds its wait (1 s), in a task of its own:
                # only our hung work is waited for (less long).
                others = [t for t in others if self._tracked(t)]
            pending: set[asyncio.Task[Any]] = set()
            if others:
                _, pending = await asyncio.wait(others, timeout=TEARDOWN_GRACE)
            if pending:
                logger.error(
                    "%d task(s) ignore cancellation and would keep gunicorn's worker from "
                    "exiting: %s; exiting now",
                    len(pending),
                    "; ".join(sorted({self._describe(t) for t in pending})),
                )
                exit_now(0)
            raise

    def _tracked(self, task: asyncio.Task[Any]) -> bool:
        registry = self.lifecycle.registry if self.lifecycle is not None else ()
        return any(task is item.task or task is item.view_task for item in registry)

    def _describe(self, task: asyncio.Task[Any]) -> str:
        for item in self.lifecycle.registry if self.lifecycle is not None else ():
            if task is item.task or task is item.view_task:
                return item.describe()
        coro = task.get_coro()
        return f"task {task.get_name()} ({getattr(coro, '__qualname__', type(coro).__name__)})"
