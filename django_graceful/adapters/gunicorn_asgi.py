"""Gunicorn's native asgi worker (``--worker-class asgi``): hung requests answered, exit bounded.

The worker (``gunicorn/workers/gasgi.py``, gunicorn >= 24) handles
its signals in the event loop: SIGTERM sets ``alive = False``, SIGQUIT/SIGINT also set
``_quick_shutdown``. Its main loop (``_serve``) sends the heartbeat and looks at ``alive``
once a second; once it is False, ``_shutdown`` closes the listening servers, waits up to
``graceful_timeout`` for every open connection (``nr_conns``, idle keep-alive ones too),
sends ``lifespan.shutdown`` (not after a quick stop), and ``_cleanup`` then cancels every
task and waits for them with no bound: a task that swallows its cancel holds the worker
until the arbiter's SIGKILL. ``max_requests`` sets ``alive = False`` from a connection.

Besides gunicorn's shared stops (``adapters/gunicorn.py``), this driver:

- at STOPPED closes the connection of each request that ignored every cancel (its client
  answered 503 by the lifecycle, where its response had not begun) and the idle keep-alive
  connections (``ASGIProtocol._keepalive_timeout``), then hands the stop to gunicorn and
  wakes its main loop (the ``asyncio.sleep`` in ``_serve``) rather than letting it sleep
  out its second;
- has ``_cleanup`` guarded: if tasks still ignore their cancel, the worker exits with
  status 0, as gunicorn's own exit (after a quick stop, ``_quick_shutdown``, gunicorn
  bounds that wait to 1 s in a task of its own: only our hung work is waited for then),
  and the worker's stop signals ignored from there (the arbiter's repeated SIGTERM would
  otherwise meet ``loop.close()`` half done: a traceback, or the end by SIGTERM).

What it reads of the asgi worker that gunicorn does not document is all in :class:`Gasgi`
(the probe), checked against 27.0.1 (27.0.0's protocol keeps no ``_awaiting_request``:
an idle keep-alive connection there held the exit until its keep-alive timeout).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from types import CodeType, FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._core.driver import Control, Driver, Ending
from .._core.signal_chain import ignore_from_now
from ._versions import fall_back
from .gunicorn import Gunicorn, GunicornStops, gunicorn_version

if TYPE_CHECKING:
    from .._core.registry import Tracked

#: The oldest gunicorn tested with the native asgi worker (it first shipped in 24).
MIN_VERSION = (27,)


def running(modules: dict[str, ModuleType]) -> bool:
    """Is this process a worker of gunicorn's native asgi worker class?"""
    worker_class = getattr(modules.get("gunicorn.workers.gasgi"), "ASGIWorker", None)
    return worker_class is not None and isinstance(Gunicorn.find(modules), worker_class)


class Gasgi:
    """The probe: every private thing this package reads or changes of the asgi worker.

    - the code objects of ``ASGIWorker._serve`` and ``ASGIProtocol._handle_connection`` /
      ``_handle_http_request``, looked for in the frames of the loop's tasks;
    - those frames' local ``self`` (the protocol);
    - the protocol's ``_closed``, ``_close_transport()``, ``_awaiting_request``,
      ``_finishing_calls`` and ``_keepalive_timeout()``;
    - the worker's ``servers``, ``handle_quit_signal()`` and ``_quick_shutdown``, and the
      future of the ``asyncio.sleep`` that ``_serve`` awaits (cancelled to wake it).
    """

    def __init__(self, worker: Any, serve: CodeType, connection: CodeType, request: CodeType):
        self.worker = worker
        self._serve = serve
        self._connection = connection
        self._request = request

    @staticmethod
    def find(worker: Any) -> Gasgi | None:
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
        return Gasgi(worker, *codes)  # type: ignore[arg-type]

    @staticmethod
    def problem(worker: Any, found: Gasgi | None) -> str | None:
        """Why the probe cannot read this gunicorn asgi worker, or None."""
        problem = Gunicorn.problem(worker, gunicorn_version(), MIN_VERSION)
        if problem is not None:
            return problem
        if found is None or not (
            isinstance(getattr(worker, "servers", None), list)
            and callable(getattr(worker, "handle_quit_signal", None))
        ):
            return (
                "its asgi worker has no _serve / servers / handle_quit_signal, or its "
                "ASGIProtocol no _handle_connection / _handle_http_request"
            )
        return None

    def open_requests(self, hung: list[Tracked]) -> list[Any]:
        """The protocols (connections) of the hung requests."""
        found = []
        for item in hung:
            task = item.task
            if task is None or task.done():
                continue
            frame = _frame_of(task, self._request) or _frame_of(task, self._connection)
            if frame is None:
                continue
            protocol = frame.f_locals.get("self")
            if protocol is not None and not getattr(protocol, "_closed", True):
                found.append(protocol)
        return found

    @staticmethod
    def close(protocol: Any) -> None:
        close = getattr(protocol, "_close_transport", None)
        if callable(close):
            close()

    def close_idle(self) -> None:
        """Close the keep-alive connections that wait for a next request: gunicorn would
        wait for them (up to ``keepalive``) before it sends ``lifespan.shutdown``."""
        for task in asyncio.all_tasks():
            frame = _frame_of(task, self._connection)
            protocol = frame.f_locals.get("self") if frame is not None else None
            if (
                protocol is not None
                and getattr(protocol, "_awaiting_request", False)
                and not getattr(protocol, "_finishing_calls", True)
                and callable(getattr(protocol, "_keepalive_timeout", None))
            ):
                protocol._keepalive_timeout()

    def close_listeners(self) -> None:
        for server in self.worker.servers:
            server.close()

    def quick_stop(self) -> None:
        self.worker.handle_quit_signal()

    @property
    def quick_stopping(self) -> bool:
        return bool(getattr(self.worker, "_quick_shutdown", False))

    def wake(self) -> None:
        """Wake gunicorn's main loop from its one-second sleep: it sees ``alive`` now."""
        for task in asyncio.all_tasks():
            coro: Any = task.get_coro()
            if getattr(coro, "cr_code", None) is not self._serve:
                continue
            sleeping: Any = getattr(coro, "cr_await", None)
            if getattr(sleeping, "cr_code", None) is asyncio.sleep.__code__:
                future = sleeping.cr_frame.f_locals.get("future")
                if isinstance(future, asyncio.Future) and not future.done():
                    future.cancel()  # _serve takes the CancelledError as "stop now"


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


class GunicornAsgiDriver(GunicornStops, Driver):
    name = "gunicorn-asgi"

    def __init__(self) -> None:
        super().__init__()
        self.gasgi: Gasgi | None = None

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        worker = Gunicorn.find(sys.modules)
        found = Gasgi.find(worker) if worker is not None else None
        problem = Gasgi.problem(worker, found)
        super().attach(control, handle_signals=handle_signals)
        if problem is not None:
            fall_back(
                "gunicorn (asgi worker)",
                problem,
                "gunicorn waits for hung requests until its SIGKILL after graceful_timeout",
            )
            return
        assert found is not None  # Gasgi.problem says why where it is None
        self.gasgi = found
        self.attach_gunicorn(control, Gunicorn(worker))
        self.guards_teardown = True

    def forced_ending(self, signum: int | None) -> Ending | None:
        return Ending(0)

    def tearing_down(self) -> None:
        """The arbiter sends SIGTERM again, once a second, to a worker it has one too many
        of (TTOU, a reload) until it is gone; gunicorn's ``loop.close()`` would meet one
        with its wakeup fd closed or SIGTERM's default action back. This worker has
        stopped, and the teardown guard bounds its exit: its stop signals do nothing now."""
        assert self.control is not None
        ignore_from_now(self.control.loop, self.quick_signals | {signal.SIGTERM, signal.SIGUSR1})

    def server_bounds_teardown(self) -> bool:
        return self.gasgi is not None and self.gasgi.quick_stopping

    def open_requests(self, hung: list[Tracked]) -> list[Any]:
        return self.gasgi.open_requests(hung) if self.gasgi is not None else []

    def close_request(self, request: Any) -> None:
        Gasgi.close(request)

    def finish(self, hung: list[Tracked]) -> None:
        if self.gasgi is not None:
            self.gasgi.close_idle()

    def _quick_release(self) -> None:
        assert self.gasgi is not None
        self.gasgi.quick_stop()

    def _close_listeners(self) -> None:
        assert self.gasgi is not None
        self.gasgi.close_listeners()

    def _stop_now(self) -> None:
        assert self.gasgi is not None
        self.gasgi.wake()
