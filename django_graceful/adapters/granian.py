"""Granian driver: the worker drains from the signal on, and Granian stops only at STOPPED.

Granian (2.x, ``--interface rsgi``, its default, ``asgi`` or ``asginl``) runs the app in
worker processes.
Its main process takes SIGTERM/SIGINT, forwards one SIGTERM to each worker and then
waits for them with no timeout. In a worker, Granian's loop handler calls
``WorkerSignal.set()``: the worker stops accepting at once and then waits for every
connection with no timeout (a hung request holds the exit forever), and a third
``set()`` blocks the worker's main thread for good. So, in the worker:

- our loop handler replaces Granian's: the signal starts our shutdown, and Granian
  keeps accepting (we answer 503 from CLOSING on);
- at STOPPED we call ``WorkerSignal.set()`` once (Granian stops accepting, finishes
  the connections whose responses are done), and if connections still hold it past
  the exit bound we end its serve loop ourselves (``lifespan.shutdown`` follows);
- meanwhile, with nothing in flight, the connections Granian waits for that have
  nothing left to send (a client that never sent a whole request: Granian would wait
  for its headers until its 30 s header timeout) are shut down at the socket
  (``_core/quiet_connections.py``: ``/proc/self/fd``, ``SIOCOUTQ``; no read of Granian);
- the main process forwards only the first signal: later ones are seen as wake-ups
  of its main thread, which sits in ``waitpid()`` meanwhile (see ``MainProcess``);
- a SIGTERM that reached the worker while it imported the app (Granian loses it) is
  taken up at startup;
- ``granian --reload`` (``AbstractServer._serve_with_reloader``) stops the worker with
  SIGTERM and then starts the next one. Where its main process holds the listening socket
  the workers share (not on Linux: there each worker binds a socket of its own, with
  ``SO_REUSEPORT``), it keeps it for the next worker, and closes it before it signals the
  workers at its own stop: the worker hands over (``parent_keeps_listeners``): Granian is
  let go at once (it stops accepting), requests in flight drain as usual, and
  connections that arrive meanwhile wait in the backlog for the next worker. Where it
  holds none, nothing keeps a connection for the next worker: under the reloader the
  door is shut at the signal (``next_process_listens``), so that new clients try again a
  moment later and meet the next worker, rather than a 503 from this one;
- with ``asginl`` (no lifespan) a failed startup stops the worker, so Granian exits 1
  as it does with ``asgi``.

What it reads of Granian that Granian does not document is all in the probe
(:class:`Worker` and :class:`MainProcess`), checked against 2.8.6 and 2.8.9: if it is not
where we expect, one warning says so and the generic driver takes over.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import time
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._core import quiet_connections
from .._core.door import parent_holds_listeners
from .._core.driver import Control, Driver
from .._core.process import in_main_thread
from .._core.signal_chain import SIGNALS
from ._versions import fall_back, installed_version, shown, version_problem

if TYPE_CHECKING:
    from .._core.registry import Tracked

logger = logging.getLogger("django_graceful")

#: The Granian versions whose worker internals the probe knows: 2.8 is the first whose
#: worker's serve loop ends on an event of its own (``evp``), which the driver sets when
#: hung work would hold a connection for ever (2.7 and older end it only once every
#: connection is done); the real-server tests pass from 2.8.6, pyproject's floor.
MIN_VERSION, BELOW_VERSION = (2, 8, 6), (3,)
#: The functions of granian/server/mp.py that run a worker's event loop; their locals
#: ``loop``, ``shutdown_event`` (the WorkerSignal) and ``evp`` (ends the serve loop).
WORKER_FUNCTIONS = frozenset(
    {"_spawn_asgi_lifespan_worker", "_spawn_asgi_worker", "_spawn_rsgi_worker"}
)
#: The one without a lifespan (``asginl``): RSGI has ``__rsgi_init__``/``__rsgi_del__``.
NO_LIFESPAN_WORKER = "_spawn_asgi_worker"
WORKER_MODULE = os.path.join("granian", "server", "mp.py")
#: What the process may take after STOPPED (the exit bound: budget + ~0.5 s), and so how
#: long Granian gets to finish connections when hung work still holds one of them.
EXIT_GRACE = 0.5
#: How often, once Granian is stopped with nothing in flight, the driver looks for the
#: connections it waits for that hold no request; one found in two looks is closed.
QUIET_LOOK = 0.1
#: How often a draining worker looks at Granian's main process for further signals.
MAIN_PROCESS_POLL = 0.1
#: How long after a worker exits the main process's wake-ups are taken for that exit.
AFTER_WORKER_EXIT = 3 * MAIN_PROCESS_POLL
#: How long a worker that saw another signal at the main process waits before letting
#: Granian go: its exit changes the main process's children, so a sibling that has not
#: looked since the signal would take that wake-up for the exit.
SIBLINGS_LOOK = 3 * MAIN_PROCESS_POLL


def running(modules: dict[str, ModuleType]) -> bool:
    """Granian's server machinery is loaded: its main process forked (or spawned) us."""
    return "granian.server.common" in modules


class GranianDriver(Driver):
    name = "granian"

    def __init__(self) -> None:
        super().__init__()
        self.worker: Worker | None = None
        self._main: MainProcess | None = None
        self._main_signal_at: float | None = None
        self._poll: asyncio.TimerHandle | None = None

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        loop = control.loop
        if not handle_signals or not in_main_thread():
            super().attach(control, handle_signals=handle_signals)  # says why it cannot
            return
        problem = _version_problem()
        worker = Worker.find(loop) if problem is None else None
        if worker is None:
            fall_back(
                "Granian",
                problem
                or f"Granian {shown(installed_version('granian'))}: its worker's stop signal "
                "was not found",
                "Granian may stop accepting and wait forever for requests on its own",
            )
            super().attach(control, handle_signals=handle_signals)
            return
        self.control = control
        self.worker = worker
        for signum in SIGNALS:
            loop.add_signal_handler(signum, self.signalled, signum)
        self._main = MainProcess.of_this_worker()
        if worker.signalled_while_importing():
            # Forked workers keep the main process's Python handler until Granian sets
            # its own after the app import; a SIGTERM in between is lost, and Granian
            # would then serve on while its main process waits for ever.
            logger.info("Granian's main process was told to stop while this worker started")
            loop.call_soon(self.signalled, signal.SIGTERM)

    def startup_failed(self, error: Exception) -> None:
        """With ``asgi`` Granian ends the worker on our ``lifespan.startup.failed`` and
        exits 1. With ``asginl`` the failure comes at the first request; rather than
        answer 503 for ever, stop the worker the same way: Granian then exits 1 too."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        worker = Worker.find(loop) if _version_problem() is None else None
        if worker is not None and not worker.lifespan:
            logger.error("stopping this Granian worker: startup failed")
            worker.stop()
            loop.call_later(EXIT_GRACE, worker.leave)  # the 503s being sent may go first

    def parent_keeps_listeners(self) -> bool:
        """Granian's main process still holds the listening socket (seen in ``/proc``):
        a reload, not a stop (see the module docstring)."""
        return self._main is not None and parent_holds_listeners() is True

    def next_process_listens(self) -> bool:
        """Under Granian's reloader (``--reload``): the next worker binds the port as
        soon as this one is gone (or the whole server stops: Ctrl-C on a development
        server, where no balancer waits for a 503)."""
        return self.worker is not None and self.worker.reloader

    def signalled(self, signum: int) -> None:
        control = self.control
        assert control is not None
        first = not control.stopping
        if control.stop_requested(signum) and first and self._main is not None:
            self._main.start_watching()
            self._schedule_poll()

    def release(self, signum: int | None, *, quick: bool, hung: list[Tracked]) -> None:
        if self.worker is None or signum is None:
            super().release(signum, quick=quick, hung=hung)
            return
        self._stop_polling()
        assert self.control is not None
        deadline = self.control.exit_deadline()
        now = time.monotonic()
        hold = 0.0
        if self._main_signal_at is not None:
            hold = min(self._main_signal_at + SIBLINGS_LOOK, deadline) - now
        self.control.loop.call_later(max(0.0, hold), self._stop_granian, deadline)

    def _stop_granian(self, deadline: float) -> None:
        """Granian stops accepting and finishes the connections whose responses are done;
        where hung work holds a connection it would wait for ever, so it gets only
        ``EXIT_GRACE`` before we end its serve loop, and otherwise until the exit bound.
        Meanwhile connections that hold no request are closed (``_close_quiet``)."""
        assert self.worker is not None and self.control is not None
        # Where Granian accepts (its listeners, made when it began to serve, close now).
        ports = quiet_connections.listening_ports()
        self.worker.stop()
        wait = deadline - time.monotonic()
        if self.control.hung():
            wait = min(wait, EXIT_GRACE)
        elif ports:
            self.keep(self.control.loop.create_task(self._close_quiet(ports, deadline)))
        self.control.loop.call_later(max(0.0, wait), self.hurry)

    async def _close_quiet(self, ports: set[int], deadline: float) -> None:
        """Close the connections Granian waits for that hold no request: a client that
        never sent a whole one (Granian would wait for its headers until its own header
        timeout, 30 s by default). While nothing is in flight here, a connection with
        nothing left to send holds no response; found so in two looks in a row, it is
        closed (``quiet_connections``)."""
        assert self.worker is not None and self.control is not None
        seen: set[int] = set()
        while self.worker.serving and time.monotonic() < deadline:
            await asyncio.sleep(QUIET_LOOK)
            if self.control.hung():
                seen = set()
                continue
            now_quiet = quiet_connections.quiet(ports)
            settled = now_quiet & seen
            if settled:
                closed = quiet_connections.close(settled, ports)
                if closed:
                    logger.info(
                        "Granian waited for %d connection(s) with no request; closed them",
                        closed,
                    )
            seen = now_quiet - settled

    def hurry(self) -> None:
        """Past STOPPED, stop waiting for Granian's connections: leave its serve loop."""
        if self.worker is None or self.control is None:
            return
        self.worker.stop()
        if self.worker.leave():
            logger.info(
                "Granian still waits for connections (%d hung); leaving its serve loop",
                len(self.control.hung()),
            )

    # -- further signals at the main process ---------------------------------------------

    def _schedule_poll(self) -> None:
        assert self.control is not None
        self._poll = self.control.loop.call_later(MAIN_PROCESS_POLL, self._poll_main)

    def _stop_polling(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def _poll_main(self) -> None:
        assert self._main is not None and self.control is not None
        woke = self._main.woke()
        if woke is None:
            self._poll = None
            return
        if woke:
            self._main_signal_at = time.monotonic()
            if self.control.stop_requested(signal.SIGTERM):
                logger.info(
                    "another signal reached Granian's main process (pid %d)", self._main.pid
                )
        self._schedule_poll()


class Worker:
    """The probe's first half: Granian's handles on this worker's stop.

    Found in the frame that runs the worker's loop (a ``sys._getframe`` walk to the
    functions ``WORKER_FUNCTIONS`` of ``granian/server/mp.py``): its locals ``loop``,
    ``shutdown_event`` (a ``WorkerSignal``: ``set()`` is what Granian's own handler does)
    and ``evp`` (set: the serve loop ends); and, in a forked worker, the main process's
    server object inherited in the frames above (its ``interrupt_signal``, and
    ``reload_on_changes``: ``--reload``).
    """

    def __init__(
        self, stop_signal: Any, serve_done: asyncio.Event, *, lifespan: bool, server: Any
    ) -> None:
        self._stop_signal = stop_signal
        self._serve_done = serve_done
        #: ``--interface asgi`` or ``rsgi``; ``asginl`` sends no lifespan.
        self.lifespan = lifespan
        #: The forked copy of the main process's server object (None when spawned).
        self._server = server
        self._stopped = False

    @classmethod
    def find(cls, loop: asyncio.AbstractEventLoop) -> Worker | None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name in WORKER_FUNCTIONS and code.co_filename.endswith(WORKER_MODULE):
                break
            frame = frame.f_back
        if frame is None:
            return None
        function = frame.f_code.co_name
        local = frame.f_locals
        stop_signal, serve_done, worker_loop = (
            local.get("shutdown_event"),
            local.get("evp"),
            local.get("loop"),
        )
        server = _forked_server(frame)
        del frame, local
        if (
            worker_loop is not loop
            or type(stop_signal).__name__ != "WorkerSignal"
            or not isinstance(serve_done, asyncio.Event)
        ):
            return None
        lifespan = function != NO_LIFESPAN_WORKER
        return cls(stop_signal, serve_done, lifespan=lifespan, server=server)

    @property
    def reloader(self) -> bool:
        """Whether Granian's reloader runs this worker (``--reload``; seen where forked)."""
        return getattr(self._server, "reload_on_changes", False) is True

    def signalled_while_importing(self) -> bool:
        """Whether the main process's handler, inherited by the fork, caught a signal."""
        return getattr(self._server, "interrupt_signal", False) is True

    def stop(self) -> None:
        """What Granian's own signal handler does; at most once (a third ``set()`` blocks)."""
        if not self._stopped:
            self._stopped = True
            self._stop_signal.set()

    @property
    def serving(self) -> bool:
        """Whether Granian's serve loop still runs (it ends once every connection is done,
        or when ``leave`` ends it)."""
        return not self._serve_done.is_set()

    def leave(self) -> bool:
        """End the serve loop now (Granian then sends ``lifespan.shutdown``); False if
        Granian had already ended it."""
        if self._serve_done.is_set():
            return False
        self._serve_done.set()
        return True


class MainProcess:
    """The probe's second half: further signals to Granian's main process, seen from a
    worker (Linux), in ``/proc/<pid>/task/<pid>/status`` and ``.../children``.

    After the first signal the main process forwards SIGTERM to its workers and sits
    in ``waitpid()`` until they exit; further signals only wake its main thread, which
    goes back to sleep: one more voluntary context switch. The only other thing that
    wakes it there is the exit of the worker it waits for, and that worker is gone
    from its children by then, so wake-ups seen with (or just after) a change of its
    children are not taken for signals.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._status = f"/proc/{pid}/task/{pid}/status"
        self._children = f"/proc/{pid}/task/{pid}/children"
        self._last: tuple[int, str] | None = None
        self._quiet_until = 0.0

    @classmethod
    def of_this_worker(cls) -> MainProcess | None:
        parent = multiprocessing.parent_process()
        if parent is None or parent.pid != os.getppid():
            return None
        main = cls(os.getppid())
        if main._read() is None:
            logger.debug("cannot watch Granian's main process: a repeated signal to it is lost")
            return None
        return main

    def start_watching(self) -> None:
        self._last = self._read()

    def woke(self) -> bool | None:
        """Whether a signal woke the main thread since the last call; None if it can no
        longer be watched (e.g. it exited)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        if now[1] != last[1]:
            self._quiet_until = time.monotonic() + AFTER_WORKER_EXIT
            return False
        return now[0] != last[0] and time.monotonic() >= self._quiet_until

    def _read(self) -> tuple[int, str] | None:
        """Voluntary context switches of the main thread (read first: a worker's exit
        changes the children before the count), and its children."""
        try:
            with open(self._status) as f:
                status = f.read()
            with open(self._children) as f:
                children = f.read()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1]), children
        return None


def _forked_server(frame: FrameType | None) -> Any:
    """The main process's server object in the frames a forked worker inherited."""
    common = sys.modules.get("granian.server.common")
    server_class = getattr(common, "AbstractServer", None)
    while frame is not None and isinstance(server_class, type):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, server_class):
            return candidate
        frame = frame.f_back
    return None


def _version_problem() -> str | None:
    """Why this Granian is not one whose worker internals the adapter knows, or None."""
    return version_problem("Granian", installed_version("granian"), MIN_VERSION, BELOW_VERSION)
