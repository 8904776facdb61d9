"""Uvicorn driver: after our STOPPED, uvicorn stops quickly and nothing hung can hold it.

Uvicorn installs ``Server.handle_exit`` with ``signal.signal`` before it loads the app,
and after the signal it waits for every connection and request task, forever unless
``--timeout-graceful-shutdown`` was given. The generic driver already chains the signals
and hands the first one to ``handle_exit`` at release; this one adds, at STOPPED:

- uvicorn's wait is cut to ``SERVER_WAIT`` (what is left to wait for closes by itself:
  idle connections, 503 refusals, websocket close handshakes);
- a request that ignored every cancel (its client answered 503 by the lifecycle, where
  its response had not begun) has its connection closed, and its task is taken off
  uvicorn's list, so uvicorn neither waits for it nor cancels it again
  (our REPORTING phase already logged it); uvicorn's ``lifespan.shutdown`` still runs,
  and finds our sequence done;
- under ``uvicorn --reload`` (its reloader, ``uvicorn/supervisors/basereload.py``, binds
  the listening socket, hands it to each worker it spawns, and stops a worker with
  SIGTERM, ``process.terminate()``, before it spawns the next one), the socket stays open
  in the reloader: the worker hands over (``parent_keeps_listeners``). It stops accepting
  at the signal and lets go of its idle connections, as uvicorn does at its own stop, and
  uvicorn stops at once; requests in flight drain as usual, and connections that arrive
  meanwhile wait in the backlog for the next worker;
- after a signal, the event loop's teardown is guarded: uvicorn turns a SIGINT into
  KeyboardInterrupt, which unwinds into ``asyncio.run``'s teardown, where every task is
  cancelled and awaited; a task that ignores it would hang the process, which is then
  ended by the signal that stopped it, as uvicorn itself does for SIGTERM.

What it reads of uvicorn that uvicorn does not document is all in :class:`Uvicorn` (the
probe), checked against 0.41.0 (the floor) and 0.55.0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core.door import parent_holds_listeners
from .._core.driver import Control, Driver, Ending
from .._serving.protocol import TRACKED_KEY
from ._versions import Version, fall_back, installed_version, version_problem

if TYPE_CHECKING:
    from .._core.registry import Tracked

logger = logging.getLogger("django_graceful")

#: The oldest uvicorn whose internals the probe knows (pyproject's floor).
MIN_VERSION = (0, 41)
#: Seconds uvicorn may still wait for connections after our STOPPED.
SERVER_WAIT = 0.5


def running(modules: dict[str, ModuleType]) -> bool:
    """Is uvicorn serving in this process (its handlers installed, or its ``serve`` running)?"""
    server_module = modules.get("uvicorn.server")
    if server_module is None:
        return False
    return Uvicorn.from_signals(server_module) is not None or _serving_task(server_module)


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


class Uvicorn:
    """The probe: every private thing this package reads or changes of uvicorn.

    - the ``uvicorn.server.Server`` is found as the owner of the SIGTERM/SIGINT handler
      (``handle_exit.__self__``);
    - ``Server.config.timeout_graceful_shutdown`` (written: the wait after STOPPED);
    - ``Server.server_state.connections`` and ``.tasks`` (a hung request's task taken off);
    - a connection's ``cycle`` (``response_complete``, ``scope``) and ``transport``;
    - ``Server.should_exit`` (written back to False where uvicorn took a stop signal
      during the startup, before our handler was in front of its own) and its
      ``_captured_signals``;
    - ``Server.servers``, ``limit_max_requests`` (a ``cached_property``)
      and ``server_state.total_requests``, for Gunicorn's Uvicorn worker;
    - ``Server.config.reload`` (the worker runs under ``--reload``), and, when it hands
      over, ``Server.servers`` (closed) and each HTTP connection's ``shutdown()`` (what
      uvicorn's own ``Server.shutdown`` calls: an idle one is closed, one whose response
      is under way closes after it).
    """

    def __init__(self, server: Any) -> None:
        self.server = server

    @staticmethod
    def from_signals(server_module: ModuleType) -> Uvicorn | None:
        """The ``Server`` whose ``handle_exit`` is the SIGTERM/SIGINT handler."""
        server_class = getattr(server_module, "Server", None)
        if server_class is None:
            return None
        for signum in (signal.SIGTERM, signal.SIGINT):
            owner = getattr(signal.getsignal(signum), "__self__", None)
            if isinstance(owner, server_class):
                return Uvicorn(owner)
        return None

    @staticmethod
    def problem(found: Uvicorn | None, version: Version | None) -> str | None:
        """Why this uvicorn is not one the probe knows, or None."""
        if found is None:
            return "uvicorn's Server is not the SIGTERM/SIGINT handler (not in the main thread?)"
        problem = version_problem("uvicorn", version, MIN_VERSION)
        if problem is not None:
            return problem
        server = found.server
        state = getattr(server, "server_state", None)
        if not (
            hasattr(getattr(server, "config", None), "timeout_graceful_shutdown")
            and isinstance(getattr(state, "connections", None), set)
            and isinstance(getattr(state, "tasks", None), set)
            and callable(getattr(server, "handle_exit", None))
        ):
            return "uvicorn's Server has no config.timeout_graceful_shutdown / server_state"
        return None

    def shorten_wait(self, seconds: float) -> None:
        config = self.server.config
        current = config.timeout_graceful_shutdown
        config.timeout_graceful_shutdown = seconds if current is None else min(current, seconds)

    def forget(self, hung: list[Tracked]) -> None:
        """Take the tasks of hung work off uvicorn's list (it would wait for them)."""
        tasks = self.server.server_state.tasks
        for item in hung:
            tasks.discard(item.task)

    def open_requests(self, hung: list[Tracked]) -> list[tuple[Any, Any]]:
        """(connection, cycle) of each hung request whose response is not complete (one
        that began streaming: a 503 completes the others, and uvicorn closes the connection
        after a response that says ``Connection: close``)."""
        found = []
        for conn in list(self.server.server_state.connections):
            cycle = getattr(conn, "cycle", None)
            if cycle is None or getattr(cycle, "response_complete", True):
                continue
            scope = getattr(cycle, "scope", None)
            item = scope.get(TRACKED_KEY) if isinstance(scope, dict) else None
            if item is not None and any(item is h for h in hung):
                found.append((conn, cycle))
        return found

    @staticmethod
    def close_request(request: tuple[Any, Any]) -> None:
        conn, _ = request
        transport = getattr(conn, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.close()

    @property
    def reloading(self) -> bool:
        """Whether this is a worker of uvicorn's reloader (``--reload``)."""
        return getattr(self.server.config, "reload", False) is True

    def let_go_of_idle_connections(self) -> None:
        """What uvicorn's own stop does to its HTTP connections (websockets stay ours)."""
        for conn in list(self.server.server_state.connections):
            if hasattr(conn, "cycle"):
                conn.shutdown()

    # -- Gunicorn's Uvicorn worker ----------------------------------------------------------

    def close_listeners(self) -> None:
        for server in getattr(self.server, "servers", []):
            server.close()

    @property
    def should_exit(self) -> bool:
        return bool(self.server.should_exit)

    def exit(self) -> None:
        self.server.should_exit = True

    def take_back_stop(self) -> int | None:
        """The stop signal uvicorn's own handler took during the startup, before ours was
        in front of it (uvicorn would stop right after the startup, closing its listening
        sockets on the connections queued for it), taken back: uvicorn serves until we
        release it; None if it took none."""
        if not self.server.should_exit:
            return None
        self.server.should_exit = False
        captured = getattr(self.server, "_captured_signals", None)
        return captured[-1] if isinstance(captured, list) and captured else signal.SIGTERM

    def take_request_limit(self) -> int | None:
        """Turn off uvicorn's own ``max_requests`` count; the limit it had (with its
        jitter), or None. ``Server.limit_max_requests`` is a cached property from 0.41 on
        (before, uvicorn read its config each time: the floor is 0.41)."""
        limit = getattr(self.server, "limit_max_requests", None)
        if not isinstance(limit, int):
            return None
        if isinstance(
            type(self.server).__dict__.get("limit_max_requests"), functools.cached_property
        ):
            self.server.__dict__["limit_max_requests"] = None  # its own check never fires
        return limit

    @property
    def total_requests(self) -> int:
        return int(self.server.server_state.total_requests)


class UvicornDriver(Driver):
    name = "uvicorn"

    def __init__(self) -> None:
        super().__init__()
        #: uvicorn, when its internals are the ones the probe knows (else: generic).
        self.uvicorn: Uvicorn | None = None

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        # Found before the signals are chained: until then the handler is uvicorn's.
        import uvicorn.server

        found = Uvicorn.from_signals(uvicorn.server)
        problem = Uvicorn.problem(found, installed_version("uvicorn"))
        super().attach(control, handle_signals=handle_signals)
        if self.chain is None:
            # HANDLE_SIGNALS is off, or the chain has said why it cannot see signals. The
            # probe still serves at STOPPED, where uvicorn still waits (after a signal
            # of ours: never, here).
            self.uvicorn = found if problem is None else None
            return
        if problem is not None:
            fall_back(
                "uvicorn",
                problem,
                "uvicorn keeps its own wait for requests (--timeout-graceful-shutdown, "
                "default forever)",
            )
            return
        assert found is not None  # Uvicorn.problem says why where it is None
        self.uvicorn = found
        self.guards_teardown = True
        signum = found.take_back_stop()
        if signum is not None:
            logger.info(
                "uvicorn took %s during the startup: stopping now", signal.Signals(signum).name
            )
            control.loop.call_soon(self.signalled, signum)

    def forced_ending(self, signum: int | None) -> Ending | None:
        return Ending(signal=signum) if signum is not None else None

    def parent_keeps_listeners(self) -> bool:
        """A worker of uvicorn's reloader, which holds the listening socket it handed over
        (seen in ``/proc``): it keeps it for the next worker, and closes it only once it
        has stopped this one, when it stops itself."""
        return (
            self.uvicorn is not None and self.uvicorn.reloading and parent_holds_listeners() is True
        )

    def stop_accepting(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.close_listeners()
            self.uvicorn.let_go_of_idle_connections()

    def open_requests(self, hung: list[Tracked]) -> list[Any]:
        return self.uvicorn.open_requests(hung) if self.uvicorn is not None else []

    def close_request(self, request: Any) -> None:
        Uvicorn.close_request(request)

    def finish(self, hung: list[Tracked]) -> None:
        if self.uvicorn is not None:
            self.uvicorn.shorten_wait(SERVER_WAIT)
            # Cancelled and reported by us already: uvicorn would wait for them, then
            # cancel them again.
            self.uvicorn.forget(hung)
