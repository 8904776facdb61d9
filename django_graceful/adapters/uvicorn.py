"""Uvicorn adapter: after our STOPPED, uvicorn stops quickly and nothing hung can hold it.

Uvicorn (0.54 read and run; the internals used are checked at startup) installs
``Server.handle_exit`` with ``signal.signal`` before it loads the app, and after the
signal it waits for every connection and request task, forever unless
``--timeout-graceful-shutdown`` was given. The generic adapter already hands the first
signal to ``handle_exit`` at STOPPED; this one adds:

- uvicorn's wait is cut to ``SERVER_WAIT`` (what is left to wait for after STOPPED
  closes by itself: idle connections, 503 refusals, websocket close handshakes);
- a request that ignored every cancel gets a 503 and its connection is closed, and its
  task is taken off uvicorn's list, so uvicorn neither waits for it nor cancels it again
  (our REPORTING phase already logged it); uvicorn's ``lifespan.shutdown`` still runs,
  and finds our sequence done;
- a task that ignores cancellation would hang ``asyncio.run``'s teardown after a SIGINT
  (uvicorn turns the SIGINT into KeyboardInterrupt, which unwinds into the teardown,
  where every task is cancelled and awaited): a guard task sees that teardown begin and,
  if tasks are still running ``TEARDOWN_GRACE`` s later, ends the process by the signal
  that stopped it, as uvicorn itself does for SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core.process import flush_output
from .._serving.protocol import SHUTTING_DOWN_BODY, TRACKED_KEY, refuse_http
from ._compat import Version, fall_back, installed_version, version_problem
from .base import ServerAdapter

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: The oldest uvicorn whose internals this adapter relies on (signal.signal handlers,
#: ``Server.server_state``, ``config.timeout_graceful_shutdown``); read up to 0.54.
MIN_VERSION = (0, 41)
#: Seconds uvicorn may still wait for connections after our STOPPED.
SERVER_WAIT = 0.5
#: Seconds the other tasks get to honour the event loop's last cancel before we end
#: the process instead of letting the teardown wait for them.
TEARDOWN_GRACE = 0.5


def running(modules: dict[str, ModuleType]) -> bool:
    """Is uvicorn serving in this process (its handlers installed, or its ``serve`` running)?"""
    server_module = modules.get("uvicorn.server")
    if server_module is None:
        return False
    return _server_from_signals(server_module) is not None or _serving_task(server_module)


def _server_from_signals(server_module: ModuleType) -> Any:
    """The ``uvicorn.server.Server`` whose ``handle_exit`` is the SIGTERM/SIGINT handler."""
    server_class = getattr(server_module, "Server", None)
    if server_class is None:
        return None
    for signum in (signal.SIGTERM, signal.SIGINT):
        owner = getattr(signal.getsignal(signum), "__self__", None)
        if isinstance(owner, server_class):
            return owner
    return None


def _serving_task(server_module: ModuleType) -> bool:
    """Is a ``Server.serve`` coroutine running on this loop (uvicorn off the main thread)?"""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        return False
    for task in tasks:
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_globals.get("__name__") == server_module.__name__:
            return True
    return False


def _unsupported(server: Any, version: Version | None) -> str | None:
    """Why the adapter cannot work with this uvicorn, or None."""
    if server is None:
        return "uvicorn's Server is not the SIGTERM/SIGINT handler (not in the main thread?)"
    problem = version_problem("uvicorn", version, MIN_VERSION)
    if problem is not None:
        return problem
    state = getattr(server, "server_state", None)
    if not (
        hasattr(getattr(server, "config", None), "timeout_graceful_shutdown")
        and isinstance(getattr(state, "connections", None), set)
        and isinstance(getattr(state, "tasks", None), set)
        and callable(getattr(server, "handle_exit", None))
    ):
        return "uvicorn's Server has no config.timeout_graceful_shutdown / server_state"
    return None


class Adapter(ServerAdapter):
    name = "uvicorn"

    def __init__(self) -> None:
        super().__init__()
        #: uvicorn's Server, when its internals are the ones we know (else: generic).
        self.server: Any = None

    def engage(self, lifecycle: Lifecycle) -> None:
        # Found before the base chains the signals: then the handler is still uvicorn's.
        modules = sys.modules
        server = _server_from_signals(modules["uvicorn.server"])
        problem = _unsupported(server, installed_version("uvicorn"))
        super().engage(lifecycle)
        if self.chain is None:
            # HANDLE_SIGNALS is off, or the base has said why it cannot chain them. The
            # server is kept for stopped(), which uses it only where uvicorn still waits
            # (``_server_still_waits``: never without a signal of ours, here).
            self.server = server if problem is None else None
            return
        if problem is not None:
            fall_back(
                "uvicorn",
                problem,
                "uvicorn keeps its own wait for requests (--timeout-graceful-shutdown, "
                "default forever)",
            )
            return
        self.server = server
        assert lifecycle.loop is not None
        # A fresh context: engage() may run inside the first request (--lifespan off).
        self.keep(
            lifecycle.loop.create_task(
                self._guard_teardown(),
                name="django_graceful uvicorn teardown guard",
                context=contextvars.Context(),
            )
        )

    def stopped(self) -> None:
        if self.server is None or not self._server_still_waits():
            # uvicorn is already stopping on its own (it sent lifespan.shutdown after its
            # own wait), there is nothing to shorten.
            super().stopped()
            return
        config = self.server.config
        current = config.timeout_graceful_shutdown
        config.timeout_graceful_shutdown = (
            SERVER_WAIT if current is None else min(current, SERVER_WAIT)
        )
        hung = list(self.lifecycle.registry) if self.lifecycle is not None else []
        state = self.server.server_state
        for item in hung:
            # Already cancelled and reported by us; uvicorn would wait for it, then cancel it again.
            state.tasks.discard(item.task)
        requests = [(conn, cycle) for conn, cycle in self._open_requests() if _is_hung(cycle, hung)]
        if not requests:
            self.release()
            return
        assert self.lifecycle is not None and self.lifecycle.loop is not None
        self.keep(self.lifecycle.loop.create_task(self._answer_then_release(requests)))

    def _server_still_waits(self) -> bool:
        """Is uvicorn still waiting for requests when our shutdown is STOPPED? Yes after a
        signal; without one, uvicorn's own wait is over (it sent lifespan.shutdown)."""
        return self._first_signal is not None

    def _open_requests(self) -> list[tuple[Any, Any]]:
        """(connection, cycle) of every HTTP connection whose response is not complete."""
        found = []
        for conn in list(self.server.server_state.connections):
            cycle = getattr(conn, "cycle", None)
            if cycle is not None and not getattr(cycle, "response_complete", True):
                found.append((conn, cycle))
        return found

    async def _answer_then_release(self, requests: list[tuple[Any, Any]]) -> None:
        answered = 0
        for conn, cycle in requests:
            answered += await _answer_hung(conn, cycle)
        logger.warning(
            "uvicorn: closed the connection of %d hung request(s), %d of them after a 503",
            len(requests),
            answered,
        )
        self.release()

    async def _guard_teardown(self) -> None:
        """Wait for asyncio.run's teardown; end the process if tasks would hang it."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if not self._released or not self._guards_teardown():
                raise
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            pending: set[asyncio.Task[Any]] = set()
            if others:
                _, pending = await asyncio.wait(others, timeout=TEARDOWN_GRACE)
            if pending:
                self._end_process(pending)
            raise

    def _guards_teardown(self) -> bool:
        """Does the guard end the process when tasks would hang the teardown? After a
        signal (``_end_process`` ends it by that signal)."""
        return self._first_signal is not None

    def _end_process(self, pending: set[asyncio.Task[Any]]) -> None:
        assert self._first_signal is not None
        signum = self._first_signal
        logger.error(
            "%d task(s) ignore cancellation and would keep the event loop from closing: %s; "
            "ending the process by %s",
            len(pending),
            "; ".join(sorted({self._describe(t) for t in pending})),
            signal.Signals(signum).name,
        )
        flush_output()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # only if the signal is blocked in this thread

    def _describe(self, task: asyncio.Task[Any]) -> str:
        for item in self.lifecycle.registry if self.lifecycle is not None else ():
            if task is item.task or task is item.view_task:
                return item.describe()
        coro = task.get_coro()
        return f"task {task.get_name()} ({getattr(coro, '__qualname__', type(coro).__name__)})"


def _is_hung(cycle: Any, hung: list[Any]) -> bool:
    """Is this uvicorn request cycle one of our hung requests (its scope carries the item)?"""
    scope = getattr(cycle, "scope", None)
    item = scope.get(TRACKED_KEY) if isinstance(scope, dict) else None
    return item is not None and any(item is h for h in hung)


async def _answer_hung(conn: Any, cycle: Any) -> int:
    """Send 503 + Connection: close if no response started; close the connection. 1 if answered."""
    answered = 0
    flow = getattr(cycle, "flow", None)
    if not (
        getattr(cycle, "response_started", True)
        or getattr(cycle, "disconnected", True)
        or getattr(flow, "write_paused", False)
    ):
        cycle.keep_alive = False
        try:
            await refuse_http(cycle.send, SHUTTING_DOWN_BODY)
            answered = 1
        except Exception:
            logger.debug("could not answer a hung request", exc_info=True)
    transport = getattr(conn, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()
    return answered
