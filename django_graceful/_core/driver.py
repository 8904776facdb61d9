"""What the lifecycle asks of the server it runs under: a driver's capabilities, and its way back.

A *driver* drives one server and holds no policy. The lifecycle decides what a signal
means (the first drains, a repeat within ``SAME_SIGNAL_WINDOW`` is the same one, a later
one escalates, a quick stop skips to CANCELLING), how the budget fits the server's own
limits, when the server may stop, and when the process must end. It asks the driver,
through the methods below, for the part that differs from server to server:

- ``attach(control)``: find the server (what the driver reads of it that the server does
  not document sits in one probe per server), and take its stop signals: each one is
  reported with ``control.stop_requested(...)``, the driver's only call into the lifecycle
  besides waiting for ``control.stopped()`` (or, from another thread, for
  ``control.stop_and_wait()``), ending the process where it would not end
  (``control.last_resort()``), and reading ``control.hung()``,
  ``control.exit_deadline()`` and ``control.stopping``;
- the facts of its server: which signals mean a quick stop (``quick_signals``), whether the
  server repeats a signal itself (``repeats_escalate``), how long it lets a worker stop
  (``server_limit()``, ``quick_limit()``), whether it is one process (``one_process``),
  whether a parent process keeps the listening sockets for the next process
  (``parent_keeps_listeners()``: a development server's reloader) or the next process
  listens on the same port right after this one stops (``next_process_listens()``),
  whether it waits for hung work for ever (``holds_hung_work``), and how it ends the
  process when it would hang for ever (``forced_ending()``);
- ``reading_requests()`` and ``read_before_closing()`` where the server reads a request's
  whole body before it calls the app;
- ``stop_accepting()`` while sibling workers serve on; ``open_requests(hung)`` and
  ``close_request(request)`` for the connections of hung requests the server would wait
  for (their clients got their 503 from the lifecycle already, through the ``send`` the
  server gave the app, where the response had not begun);
  ``finish(hung)`` at STOPPED, so that it waits for nothing hung; ``release(...)``: let
  the server stop in its own way, once; ``hurry()`` when the operator
  insists after that; ``detach()`` at the end of the cycle;
- ``close_websocket(send, code, task)`` and ``startup_failed(error)``.

This base class is the generic driver, for a server no driver knows: it chains
SIGTERM/SIGINT in front of the server's handlers (``signal_chain``) and, at release, runs
the server's handler for the first signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .signal_chain import ChainedSignals

if TYPE_CHECKING:
    from .phases import Phase
    from .registry import Tracked

logger = logging.getLogger("django_graceful")


@dataclass(frozen=True)
class Ending:
    """How a process ends: by a signal's default action (as the server would, e.g.
    uvicorn re-raises SIGTERM), or with an exit status."""

    status: int = 0
    signal: int | None = None

    def __str__(self) -> str:
        if self.signal is not None:
            return f"by {signal.Signals(self.signal).name}"
        return f"with status {self.status}"


class Control(Protocol):
    """The lifecycle as a driver sees it: all a driver may ask of it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def stopping(self) -> bool:
        """Whether the shutdown has begun (or the server's stop was reported)."""
        ...

    def stop_requested(
        self,
        signum: int | None,
        *,
        alone: bool = False,
        trigger: str | None = None,
        quick: bool | None = None,
    ) -> bool:
        """The server was told to stop: by ``signum``, or (None) in a way the driver saw,
        named ``trigger``. ``alone``: this worker stops while its siblings serve on.
        ``quick``: a quick stop; by default, whether ``signum`` is a quick signal.
        False if it was taken for a repeat of the last one (``SAME_SIGNAL_WINDOW``)."""
        ...

    async def stopped(self, trigger: str) -> None:
        """Until the shutdown is STOPPED; if it has not begun (only the server stops, in a
        way no signal told us), it begins now, named ``trigger``."""
        ...

    def hung(self) -> list[Tracked]:
        """The work still running (after STOPPED: what the report called hung)."""
        ...

    def stop_and_wait(
        self, trigger: str, signum: int | None, interrupts: Mapping[type[BaseException], int]
    ) -> bool:
        """From a thread that is not the loop's (the process's main thread, exiting while
        the server serves in another): run the shutdown (``trigger``; begun by ``signum``,
        or None) until the server is released, at most until the exit deadline; whether it
        got there. ``interrupts``: the exceptions a signal handler raises in that thread
        meanwhile, each standing for its signal."""
        ...

    def last_resort(self, why: str, ending: Ending) -> None:
        """End the process now, ``ending`` as it would have, saying ``why``: where, the
        shutdown over, something the lifecycle cannot see would keep it from ending."""
        ...

    def exit_deadline(self) -> float:
        """The ``time.monotonic()`` by which the server should have let the process end
        (the budget from the first signal, and half of ``EXIT_SLACK``)."""
        ...


class Driver:
    """The generic driver; a server's own driver overrides what its server needs."""

    name = "generic"
    #: Signals this server's worker takes as a quick stop (skip to CANCELLING).
    quick_signals: frozenset[int] = frozenset()
    #: Whether a repeated (graceful) signal escalates; not where the server itself sends
    #: one again and again (Gunicorn's arbiter, to a worker it has too many of).
    repeats_escalate = True
    #: Whatever stops it, the server as a whole stops (one process: Daphne). Otherwise it
    #: does when a signal stops a worker that is not ``alone``.
    one_process = False
    #: The server waits for every task it started, with no bound and nothing we can answer:
    #: hung work at STOPPED makes the lifecycle end the process once the report is written.
    holds_hung_work = False
    #: Set by ``attach`` where the server's teardown of the event loop needs guarding
    #: (``forced_ending``).
    guards_teardown = False
    #: Also take SIGTERM/SIGINT where the process ignores them (see ChainedSignals): only
    #: for a driver whose ``release`` stops the server without its handler.
    chain_ignored_signals = False

    def __init__(self) -> None:
        self.control: Control | None = None
        self.chain: ChainedSignals | None = None
        self._kept: set[asyncio.Task[Any]] = set()

    # -- attach and detach --------------------------------------------------------------

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        """Find the server and (``handle_signals``) take its stop signals; called once,
        in the loop thread, when startup has completed. A driver that cannot find what it
        needs says why with one warning (``adapters._versions.fall_back``) and stays generic."""
        self.control = control
        if handle_signals:
            self.chain_signals(control.loop)

    def chain_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """The generic way in: our handler in front of the server's SIGTERM/SIGINT."""
        chained = ChainedSignals(
            loop,
            self.signalled,
            chain_ignored=self.chain_ignored_signals,
            # Where no server runs (a test client's thread) that is no news.
            off_main_thread=logging.INFO if self.name == "generic" else logging.WARNING,
        )
        if chained.install():
            self.chain = chained

    def signalled(self, signum: int) -> None:
        """A stop signal reached this process (in the loop thread)."""
        if self.control is not None:
            self.control.stop_requested(signum)

    def detach(self) -> None:
        """The cycle is STOPPED: put back the signal handlers ``attach`` replaced (where
        nothing replaced ours since); ``release`` still reaches the server's."""
        if self.chain is not None:
            self.chain.restore()

    def keep(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Hold a reference to a task of ours until it ends (the loop holds a weak one)."""
        self._kept.add(task)
        task.add_done_callback(self._kept.discard)
        return task

    # -- facts of the server --------------------------------------------------------------

    def server_limit(self) -> tuple[float, str] | None:
        """``(seconds, what)``: the server kills this process ``seconds`` after its stop
        began (Gunicorn's ``graceful_timeout``); None if it never does."""
        return None

    def parent_keeps_listeners(self) -> bool:
        """Whether, as this process stops, its parent keeps the listening sockets open for
        the next process it starts (a development server's reloader), asked at the first
        stop. The stop is then a hand-over: connections that arrive meanwhile wait in the
        sockets' backlog for the next process, so nothing needs shutting
        (``ServerStops``)."""
        return False

    def next_process_listens(self) -> bool:
        """Whether, once this process has stopped, the next process listens on the same
        port on a socket of its own (a reloader that keeps no socket), asked at the first
        stop where the parent keeps none: new clients had better wait for it than be
        answered that this one is shutting down, so the door is shut at once
        (``door.shut_now``)."""
        return False

    def quick_limit(self) -> float | None:
        """Seconds the server leaves a worker after a quick stop during its stop; None."""
        return None

    def last_words(self, why: str, status: int) -> None:
        """The lifecycle ends the process now, with ``status``, saying ``why``: the place
        to tell a supervisor that would not read the status (from any thread, quickly)."""

    def forced_ending(self, signum: int | None) -> Ending | None:
        """How the process ends when the lifecycle must end it for the server, as the
        server itself would end it after ``signum`` (the first signal, or None): where,
        after ``release``, tasks that ignore cancellation would hang the server's
        teardown of the event loop (it cancels and awaits every task; guarded only where
        ``guards_teardown``), or where it would wait for hung work for ever
        (``holds_hung_work``). None: the teardown is not guarded."""
        return None

    def tearing_down(self) -> None:
        """The server, released, tears its event loop down (it cancelled every task; only
        where ``guards_teardown``): the process ends in a moment."""

    def server_bounds_teardown(self) -> bool:
        """Whether the server bounds its teardown's wait itself, so that only our tracked
        work needs watching (Gunicorn's native worker after a quick stop)."""
        return False

    # -- what the lifecycle asks of the server --------------------------------------------

    def stop_accepting(self) -> None:
        """Close this worker's listening sockets: its siblings (or the next process, where
        the parent keeps the sockets) take the new connections."""

    def open_requests(self, hung: list[Tracked]) -> list[Any]:
        """The server's handles on the connections of ``hung`` requests whose response did
        not end (a 503 ends it), which it would wait for; each is given to
        ``close_request``."""
        return []

    def close_request(self, request: Any) -> None:
        """Close the connection of one of ``open_requests``."""

    def reading_requests(self) -> int:
        """Requests the server accepted but calls the app for only once it has read their
        whole body (Daphne): the grace waits for them as for work in flight."""
        return 0

    def read_before_closing(self) -> bool:
        """Called in the app's task for a request that reaches the app from CLOSING on:
        whether the server was already reading it when CLOSING began (``reading_requests``),
        so that it is served as work in flight rather than refused."""
        return False

    def release(self, signum: int | None, *, quick: bool, hung: list[Tracked]) -> None:
        """Let the server stop in its own way, once: as after ``signum``, the first signal
        (None: the shutdown began without one), or a quick stop (``quick``); ``hung``:
        the work still running, reported already."""
        if signum is not None and self.chain is not None:
            self.chain.forward(signum)

    def finish(self, hung: list[Tracked]) -> None:
        """Our shutdown is STOPPED, its report written: keep the server from waiting for
        ``hung`` work (its connections were answered and closed: ``open_requests``)."""

    def hurry(self) -> None:
        """The operator signalled again after ``release``: stop waiting for the server."""

    def phase_changed(self, phase: Phase) -> None:
        """The lifecycle entered ``phase`` (in the loop thread)."""

    async def close_websocket(
        self, send: Any, code: int, task: asyncio.Task[Any] | None = None
    ) -> None:
        """Close an accepted websocket with ``code`` (1012) at shutdown, through the
        ``send`` the app was given (the server's, or a middleware's around it); ``task``:
        the one the server runs the app in for it. A server that refuses such codes over
        ASGI overrides this."""
        await send({"type": "websocket.close", "code": code})

    def startup_failed(self, error: Exception) -> None:
        """Startup failed (already logged); the server is about to end this process."""
