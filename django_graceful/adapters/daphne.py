"""Daphne driver: Twisted's shutdown waits for our STOPPED, then ends what is left without hanging.

Daphne is one process. Twisted installs SIGTERM/SIGINT handlers at ``reactor.run``, and
Daphne's "before shutdown" trigger ``Server.kill_all_applications`` cancels every request
at once, raises ``KeyError`` on a connection still sending its request (leaving the other
requests uncancelled) and waits forever for a task that swallows its cancellation. This
driver chains the signals like the generic one (Twisted stops the reactor only when we
release it at STOPPED) and replaces that trigger with one that:

- runs our shutdown to STOPPED first (bounded), if anyone but us stopped the reactor (a
  signal we could not chain, an app raising KeyboardInterrupt, an embedding program);
- then cancels the application instances left, waiting at most ``LEFTOVER_WAIT``, and
  lets the last bytes leave (the 503s the lifecycle answered hung requests with, a
  response a client reads slowly), until the exit deadline, before Twisted drops every
  connection.

Daphne calls the app only once it has read a request's whole body: from CLOSING on, the
requests it was still reading count as work in flight (the grace waits for them, and
they are served, not refused), as on the servers that hand an upload to the app at once.

From DRAINING on it also lifts Daphne's ``application_close_timeout`` by the budget (while
we shut down, our phases decide, and name what hangs), and it closes websockets with the
codes Daphne's ASGI ``send`` refuses (1001, 1012).

Under Daphne's ``runserver`` with Django's autoreloader (Channels' development setup) the
server runs in a thread of the reloader's child process, without signal handlers, and is
never stopped: a reload ends the process from its main thread (``sys.exit(3)``), and so
does Ctrl-C (``KeyboardInterrupt`` there). No signal reaches us, so none is chained: the
process's exit runs our shutdown instead, from the main thread, on the reactor's loop and
bounded by the budget (:meth:`DaphneDriver.process_exits`), before the process goes on to
exit (and the reloader starts the next one); new clients meanwhile try again a moment
later and meet the next server (``next_process_listens``). Ctrl-C reaches the reloader's
own process too, which then gives its child a quarter of a second before it kills it:
there, the first Ctrl-C leaves the child its budget to stop in (:func:`guard_reloader`).
A SIGTERM to the reloader's process (``docker stop``), which Django answers by killing the
child at once, is passed on to the child instead, which exits 0 from its main thread as
on Ctrl-C, and is given the same time.

What it reads of Daphne, Twisted, Django's autoreloader and Python that they do not
document is all in :class:`Daphne` (the probe), checked against Daphne 4.1.0 and 4.2.3
with Twisted 26, Django 5.2 to 6.1, Python 3.11 to 3.13.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core.driver import Control, Driver, Ending
from .._core.phases import EXIT_SLACK, Phase
from .._core.process import end_process, in_loop_thread
from .._core.stops import SAME_SIGNAL_WINDOW
from ._versions import fall_back, installed_version, version_problem

if TYPE_CHECKING:
    from .._core.registry import Tracked

logger = logging.getLogger("django_graceful")

#: The Daphne versions whose internals (server.py, http_protocol.py) the probe knows.
MIN_VERSION, BELOW_VERSION = (4, 1), (5,)
#: How long the final cancel of leftover application instances may take before Twisted
#: closes every connection and the process exits (Daphne's own waits forever).
LEFTOVER_WAIT = 0.1
#: How often to look whether the last bytes (the 503s to hung requests, a response a client
#: reads slowly) have left before Twisted drops every connection: waited for until the
#: exit deadline (the budget), as the other servers do.
FLUSH_POLL = 0.01
#: Under the autoreloader, how long after a SIGINT the reloader's process passes it on to
#: its child, where it could have been sent to that process alone (an IDE's stop button).
#: Ctrl-C reaches the child itself at once, which then ignores this copy.
FORWARD_AFTER = 0.25
#: Under the autoreloader, how long the server's process may take to exit once our
#: shutdown is over before it is ended: Python's exit joins the threads of sync code, and
#: a sync view still running (hung, reported) would hold it, and the reload, for ever. Long
#: enough for ``atexit`` work of the project's own (an error reporter's flush: 2 s).
EXIT_WAIT = 3.0
#: The status Django's autoreloader ends its child with to be started again.
RELOAD_STATUS = 3


def running(modules: dict[str, ModuleType]) -> bool:
    """True in a Daphne process: its asyncio reactor runs, and it runs this very loop."""
    if "daphne.server" not in modules:
        return False
    reactor = modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None or not getattr(reactor, "running", False):
        return False
    return in_loop_thread(loop)


class Daphne:
    """The probe: every private thing this package reads or changes of Daphne and Twisted.

    - Twisted's ``reactor._eventTriggers["shutdown"]`` (its ``state`` and ``before``
      triggers), a trigger's ID built as ``("shutdown", ("before", callable, args,
      kwargs))`` to remove Daphne's ``Server.kill_all_applications``, and
      ``reactor._asyncioEventloop`` (in ``running``);
    - ``Server.connections`` (each connection's ``application_instance`` and
      ``disconnected``) and ``Server.application_close_timeout`` (raised while we stop);
    - an HTTP request as a ``daphne.http_protocol.WebRequest`` (its body still being read
      while it has Twisted's ``content`` but no ``application_instance``);
      ``reactor.getWriters()`` (a connection with bytes still to send);
    - a websocket's ``send`` as ``partial(Server.handle_reply, protocol)`` (else its
      connection found by its ``application_instance``), and autobahn's
      ``sendCloseFrame()``;
    - under ``runserver`` (``under_autoreloader``): that Django's autoreloader runs the
      command in a thread named ``django-main-thread`` of its child process (marked by the
      ``DJANGO_AUTORELOAD_ENV`` variable), ends that process from its main thread to reload
      (``sys.exit(3)``, after its ``file_changed`` signal; ``RELOAD_STATUS``) and on Ctrl-C (a
      ``KeyboardInterrupt`` it catches) or SIGTERM (its handler raises ``SystemExit``);
      that Daphne's ``runserver`` module then runs the server there with no signal
      handlers; and Python's ``threading._register_atexit`` (``at_exit``): its hooks run in
      the main thread at the interpreter's exit while every other thread still runs,
      before threads are joined and before ``atexit``;
    - at Django's setup (``reloader_role``): that ``manage.py runserver`` without
      ``--noreload`` runs Django's autoreloader (the command is ``sys.argv[1]``, as Django's
      ``ManagementUtility`` reads it), whose own process waits for its child in
      ``subprocess.run``: on ``KeyboardInterrupt`` that waits 0.25 s for the child, then
      kills it, on any other exception (the ``SystemExit`` of Django's SIGTERM handler) it
      kills it at once; that ``run_with_reloader`` installs that SIGTERM handler, then calls
      the module's ``restart_with_reloader`` (looked up when called: we wrap it, to replace
      the handler with ours that chains it, ``after_reloader_signals``), whose loop starts
      the child again while it exits with 3, else returns its status; and Linux's
      ``/proc/self/task/*/children`` to find that child (``children``).
    """

    def __init__(self, reactor: Any, servers: list[Any]) -> None:
        self.reactor = reactor
        self.servers = servers

    @staticmethod
    def take_over_shutdown(trigger: Any) -> Daphne | str:
        """Put ``trigger(server)`` in place of each Daphne server's "before shutdown"
        trigger; the probe, or why that is not possible here."""
        problem = version_problem("Daphne", installed_version("daphne"), MIN_VERSION, BELOW_VERSION)
        if problem is not None:
            return problem
        reactor = sys.modules["twisted.internet.reactor"]
        server_class = sys.modules["daphne.server"].Server
        event = getattr(reactor, "_eventTriggers", {}).get("shutdown")
        if event is None or getattr(event, "state", None) != "BASE":
            return "the reactor's shutdown event is not where Twisted 26 keeps it"
        candidates = [
            getattr(before, "__self__", None)
            for before, args, kwargs in event.before
            if getattr(before, "__name__", "") == "kill_all_applications" and not args
        ]
        servers = [s for s in candidates if isinstance(s, server_class)]
        if not servers:
            return "Server.kill_all_applications is not a shutdown trigger"
        if not all(isinstance(getattr(s, "connections", None), dict) for s in servers):
            return "Server.connections is not a dict"
        for server in servers:
            # A trigger's ID is (event, (phase, callable, args, kwargs)); removal compares them.
            reactor.removeSystemEventTrigger(
                ("shutdown", ("before", server.kill_all_applications, (), {}))
            )
            reactor.addSystemEventTrigger("before", "shutdown", trigger, server)
        return Daphne(reactor, servers)

    def lift_close_timeout(self, seconds: float) -> None:
        """Daphne cancels an app that outlives its closed connection by
        ``application_close_timeout`` ("took too long to shut down and was killed")."""
        for server in self.servers:
            server.application_close_timeout += seconds

    def reading(self) -> list[Any]:
        """The HTTP requests whose body Daphne is still reading: it calls the app only
        once it has read the whole body. A request whose headers are not all in yet
        (Twisted's ``Request.content`` is still None) is not one: a client trickling its
        headers has sent no request."""
        from daphne.http_protocol import WebRequest  # type: ignore[import-untyped]

        return [
            protocol
            for server in self.servers
            for protocol, details in list(server.connections.items())
            if isinstance(protocol, WebRequest)
            and getattr(protocol, "content", None) is not None
            and "disconnected" not in details
            and "application_instance" not in details
        ]

    def called_for(self, protocols: set[Any], task: asyncio.Task[Any] | None) -> Any:
        """Which of ``protocols`` Daphne runs the app for in ``task``, or None."""
        for server in self.servers:
            for protocol in protocols:
                details = server.connections.get(protocol)
                if details is not None and details.get("application_instance") is task:
                    return protocol
        return None

    def websocket_running(self, task: asyncio.Task[Any]) -> Any:
        """The websocket connection (autobahn protocol) Daphne runs the app for in
        ``task``, or None."""
        for server in self.servers:
            for protocol, details in list(server.connections.items()):
                if details.get("application_instance") is task:
                    return protocol if _closes_frames(protocol) else None
        return None

    @staticmethod
    def under_autoreloader() -> bool:
        """Whether this thread runs Daphne's ``runserver`` under Django's autoreloader."""
        from django.utils import autoreload

        return (
            os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"
            and threading.current_thread().name == "django-main-thread"
            and "daphne.management.commands.runserver" in sys.modules
        )

    @staticmethod
    def at_exit(hook: Any) -> None:
        """Call ``hook()`` in the main thread when the interpreter exits, while the server's
        thread still runs and before anything joins the threads (``concurrent.futures``
        joins its workers then: a sync view still running would hold the exit)."""
        register = getattr(threading, "_register_atexit", None)
        if register is None:  # not CPython's threading: later, but still before the end
            import atexit

            atexit.register(hook)
            return
        with contextlib.suppress(RuntimeError):  # the interpreter exits already: too late
            register(hook)

    @staticmethod
    def reloader_role() -> str | None:
        """In the main thread at Django's setup: ``"parent"`` in the process Django's
        autoreloader watches Daphne's ``runserver`` from, ``"child"`` in the process it
        runs it in, else None."""
        from django.core.management import get_commands
        from django.utils import autoreload

        if not (
            threading.current_thread() is threading.main_thread()
            and sys.argv[1:2] == ["runserver"]
            and "--noreload" not in sys.argv
            and get_commands().get("runserver") == "daphne"
        ):
            return None
        return "child" if os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true" else "parent"

    @staticmethod
    def after_reloader_signals(hook: Callable[[], None]) -> None:
        """In the reloader's process: call ``hook()`` in the main thread once Django's
        ``run_with_reloader`` has installed its SIGTERM handler, just before it starts the
        first child (``restart_with_reloader``, wrapped)."""
        from django.utils import autoreload

        restart = autoreload.restart_with_reloader
        if getattr(restart, "__wrapped__", None) is not None:
            return  # wrapped already (a second setup in this process)

        @functools.wraps(restart)
        def restart_with_reloader(*args: Any, **kwargs: Any) -> Any:
            hook()
            return restart(*args, **kwargs)

        autoreload.restart_with_reloader = restart_with_reloader

    @staticmethod
    def children() -> list[int]:
        """This process's child processes (the reloader's one child), as Linux lists them
        (``/proc/self/task/*/children``); none where that is not readable."""
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as listed:
                    pids += [int(pid) for pid in listed.read().split()]
        return pids

    def stop_reactor(self) -> None:
        """What Twisted's SIGTERM/SIGINT handler does, also when Twisted installed none
        (SIGINT ignored in a background job, ``Server(signal_handlers=False)``)."""
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping: our trigger started the shutdown

    @staticmethod
    async def cancel_leftovers(server: Any) -> None:
        """Cancel the application instances still running, waiting at most LEFTOVER_WAIT."""
        tasks = [details.get("application_instance") for details in server.connections.values()]
        left = [t for t in tasks if t is not None and not t.done()]
        if not left:
            return
        for task in left:
            task.cancel("django_graceful: Daphne is stopping")
        _, pending = await asyncio.wait(left, timeout=LEFTOVER_WAIT)
        logger.info("Daphne stopping: cancelled %d leftover application instance(s)", len(left))
        if pending:
            logger.warning("%d application instance(s) ignored the cancel: abandoned", len(pending))

    def still_writing(self) -> bool:
        """Whether a connection still has bytes to send (a last 503, a response a client
        reads slowly, also one Daphne counts as finished): the reactor watches it for
        writing until its buffer is out."""
        return bool(self.reactor.getWriters())

    @staticmethod
    def websocket_protocol(send: Any) -> Any:
        """The autobahn protocol behind a Daphne websocket's ``send`` (``partial(handle_reply,
        protocol)``), or None."""
        server = getattr(getattr(send, "func", None), "__self__", None)
        args: tuple[Any, ...] = getattr(send, "args", ())
        if getattr(send, "func", None) != getattr(server, "handle_reply", None) or len(args) != 1:
            return None
        protocol = args[0]
        return protocol if _closes_frames(protocol) else None


def _closes_frames(protocol: Any) -> bool:
    """Whether ``protocol`` is a websocket connection of Daphne's (autobahn's
    ``sendCloseFrame()``, its server's ``connections``)."""
    return callable(getattr(protocol, "sendCloseFrame", None)) and isinstance(
        getattr(getattr(protocol, "server", None), "connections", None), dict
    )


def guard_reloader(budget: Callable[[], float]) -> None:
    """Ctrl-C and SIGTERM under Django's autoreloader running Daphne's ``runserver``
    (called at Django's setup, in either process): they stop the server as any stop does,
    once."""
    role = Daphne.reloader_role()
    if role == "parent":
        guard = _ReloaderParent(budget)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, guard.on_sigint)
        # Django installs its SIGTERM handler later, when the command runs: ours then.
        Daphne.after_reloader_signals(guard.take_sigterm)
    elif role == "child":
        from django.utils import autoreload

        autoreload.autoreload_started.connect(
            _guard_reloader_child, dispatch_uid="django_graceful.daphne.reloader_child"
        )


class _ReloaderParent:
    """In the reloader's process: the first SIGINT or SIGTERM no longer ends its child at
    once (a SIGINT a quarter of a second later, a SIGTERM at once, by SIGKILL), but leaves
    it ``budget()`` (and ``EXIT_SLACK``) to stop in; a second one, or that time spent, is
    the signal as before. Ctrl-C reaches the child too; a SIGINT to this process alone (an
    IDE's stop button) is passed on to it after ``FORWARD_AFTER`` s, a SIGTERM (``docker
    stop``) at once. The child then exits 0, and so does this process, as Django's would."""

    def __init__(self, budget: Callable[[], float]) -> None:
        self.budget = budget
        self.asked = False
        #: Django's own SIGTERM handler (``sys.exit(0)``), once ours replaced it.
        self.django_sigterm: Any = None

    def take_sigterm(self) -> None:
        previous = signal.getsignal(signal.SIGTERM)
        if callable(previous):  # Django's: anything else (ignored, default) is left alone
            self.django_sigterm = previous
            signal.signal(signal.SIGTERM, self.on_sigterm)

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self._give_time("SIGINT", "Ctrl-C again", FORWARD_AFTER, signal.SIGINT)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        if self.asked:
            self.django_sigterm(signum, frame)
            return
        self._give_time("SIGTERM", "SIGTERM again", 0.0, signal.SIGTERM)

    def _give_time(
        self, name: str, again: str, forward_after: float, signum: signal.Signals
    ) -> None:
        self.asked = True
        wait = self.budget() + EXIT_SLACK
        logger.info(
            "%s: the server stops gracefully (at most %.1f s); %s to stop it now",
            name,
            wait,
            again,
        )
        if forward_after:
            _after(forward_after, lambda: _forward(signum))
        else:
            _forward(signum)
        # Then the same signal again, to this process's main thread: as before.
        _after(wait, lambda: _thread.interrupt_main(signum))


def _after(delay: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()


def _guard_reloader_child(sender: Any, **kwargs: Any) -> None:
    """In the server's process (its main thread, the autoreloader started): the first
    SIGINT is Python's (``KeyboardInterrupt``: the reloader's loop ends, the process exits
    and runs the shutdown); the ones after it are ignored: the reloader's copy of Ctrl-C
    (``FORWARD_AFTER``) must not end the process by SIGINT on its way out (its status then
    says so, and the reloader's too), and a second Ctrl-C is the reloader's to act on (it
    ends this process). SIGTERM stays Django's (``sys.exit(0)``), noted first: either
    signal names the shutdown's trigger, and makes a reload it interrupts an exit; a
    SIGTERM within ``SAME_SIGNAL_WINDOW`` of the first is a repeat, and ignored here."""
    django_sigterm = signal.getsignal(signal.SIGTERM)
    if callable(django_sigterm):
        first: list[float] = []

        def on_sigterm(signum: int, frame: Any) -> None:
            _STOP_SIGNAL.append(signal.SIGTERM)
            now = time.monotonic()
            if first and now - first[0] < SAME_SIGNAL_WINDOW:
                # A repeat (a supervisor's SIGTERM to the process group, passed on by the
                # reloader too) while the first one's exit is on its way to our shutdown:
                # a second SystemExit there would end the process before it ran.
                return
            first[:] = first or [now]
            django_sigterm(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def on_sigint(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _STOP_SIGNAL.append(signal.SIGINT)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


#: In the server's process under the autoreloader, the signals (SIGINT: Ctrl-C, SIGTERM)
#: that reached it, first first: a reload they interrupt ends in an exit instead
#: (``DaphneDriver.process_exits``).
_STOP_SIGNAL: list[int] = []


def _forward(signum: int) -> None:
    for pid in Daphne.children():
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


class DaphneDriver(Driver):
    name = "daphne"
    #: Daphne is one process: whatever stops it (a signal, ``reactor.stop()``) stops the
    #: server.
    one_process = True
    #: Daphne in a background job ignores SIGINT; stopping the reactor ourselves
    #: (``release``) makes ``kill -INT`` a graceful stop there too.
    chain_ignored_signals = True

    def __init__(self) -> None:
        super().__init__()
        self.daphne: Daphne | None = None
        #: The requests Daphne was still reading when CLOSING began: served when their
        #: body is in, as work in flight (other servers call the app before the body).
        self._read_at_closing: set[Any] = set()
        #: Under the autoreloader: the thread the server runs in, and what ends the
        #: process (a reload names the file that changed).
        self._server_thread: threading.Thread | None = None
        self._exit_trigger = "runserver's exit (Ctrl-C, SIGTERM)"
        self._reloading = False

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        if Daphne.under_autoreloader():
            # No signal reaches this thread (nor any other part of the server): the
            # process's exit, in its main thread, stands for them.
            super().attach(control, handle_signals=False)
            self._serve_under_autoreloader()
        else:
            super().attach(control, handle_signals=handle_signals)
        try:
            found = Daphne.take_over_shutdown(self._before_reactor_stops)
        except Exception as exc:
            found = f"{type(exc).__name__}: {exc}"
        if isinstance(found, str):
            fall_back(
                "Daphne",
                found,
                "once our shutdown is over, Daphne's own stop applies (it waits forever "
                "for a request that ignores its cancel)",
            )
            return
        self.daphne = found

    def _serve_under_autoreloader(self) -> None:
        from django.utils import autoreload

        self._server_thread = threading.current_thread()
        autoreload.file_changed.connect(
            self._file_changed, dispatch_uid="django_graceful.daphne.file_changed"
        )
        Daphne.at_exit(self.process_exits)
        logger.info(
            "Daphne's runserver under the autoreloader: a reload or Ctrl-C ends this process "
            "from its main thread, which runs the shutdown first"
        )

    def _file_changed(self, sender: Any, file_path: Any, **kwargs: Any) -> None:
        """Django's autoreloader is about to reload (in the main thread); None: it does."""
        self._exit_trigger = f"reload ({file_path} changed)"
        self._reloading = True

    def process_exits(self) -> None:
        """The main thread's exit hook under the autoreloader (a reload, Ctrl-C, SIGTERM):
        our shutdown on the reactor's loop, then Twisted's own stop in the server's thread
        (leftovers cancelled, the last bytes out), all within the budget; then the process
        goes on to exit. Ctrl-C (or SIGTERM) meanwhile escalates, and makes a reload an
        exit."""
        control = self.control
        if control is None:
            return
        self._stop_then_wait_for_twisted(control)
        if self._reloading and _STOP_SIGNAL:
            # Exiting with 3 would have the reloader start the next process: Ctrl-C (or
            # SIGTERM) during a reload's shutdown stops the server, as before the reload.
            name = signal.Signals(_STOP_SIGNAL[0]).name
            logger.info("%s during the reload: the server exits instead", name)
            end_process(0)
        self._guard_the_exit(control, Ending(RELOAD_STATUS if self._reloading else 0))

    @staticmethod
    def _guard_the_exit(control: Control, ending: Ending) -> None:
        """Python's exit goes on from here (threads joined, ``atexit``): end the process
        ``ending`` as it would have, if it has not ended ``EXIT_WAIT`` s from now."""

        def guard() -> None:
            time.sleep(EXIT_WAIT)
            me, main = threading.current_thread(), threading.main_thread()
            held = [t.name for t in threading.enumerate() if t is not me and t is not main]
            control.last_resort(
                "the process's exit is held (by a thread of sync code still running?); "
                f"threads: {', '.join(held) or 'none'}",
                ending,
            )

        threading.Thread(target=guard, name="graceful-exit-guard", daemon=True).start()

    def _stop_then_wait_for_twisted(self, control: Control) -> None:
        released = control.stop_and_wait(
            self._exit_trigger,
            # Not a reload: a signal (SIGINT where we did not see which): the same again
            # within the lifecycle's window is a repeat, a later one escalates.
            None if self._reloading else (_STOP_SIGNAL or [signal.SIGINT])[0],
            # Python's SIGINT handler, and the autoreloader's SIGTERM handler (sys.exit).
            {KeyboardInterrupt: signal.SIGINT, SystemExit: signal.SIGTERM},
        )
        thread = self._server_thread
        if not released or thread is None or self.daphne is None:
            return
        try:
            thread.join(max(control.exit_deadline() - time.monotonic(), 0))
        except (KeyboardInterrupt, SystemExit):
            pass  # asked again: the process exits now

    def phase_changed(self, phase: Phase) -> None:
        if self.daphne is None or self.control is None:
            return
        if phase == Phase.DRAINING:
            # Until the watchdog's bound, a half EXIT_SLACK after the exit deadline.
            extra = self.control.exit_deadline() + EXIT_SLACK / 2 - time.monotonic()
            self.daphne.lift_close_timeout(extra)
        elif phase == Phase.CLOSING:
            self._read_at_closing = set(self.daphne.reading())

    def next_process_listens(self) -> bool:
        """Under Django's autoreloader: its process keeps no listening socket, and the next
        server binds the port once this process is gone (or the whole development server
        stops: Ctrl-C, where no balancer waits for a 503)."""
        return self._server_thread is not None

    def reading_requests(self) -> int:
        return len(self.daphne.reading()) if self.daphne is not None else 0

    def read_before_closing(self) -> bool:
        if self.daphne is None or not self._read_at_closing:
            return False
        protocol = self.daphne.called_for(self._read_at_closing, asyncio.current_task())
        self._read_at_closing.discard(protocol)
        return protocol is not None

    def release(self, signum: int | None, *, quick: bool, hung: list[Tracked]) -> None:
        if self.daphne is None:
            super().release(signum, quick=quick, hung=hung)
        else:
            self.daphne.stop_reactor()

    async def close_websocket(
        self, send: Any, code: int, task: asyncio.Task[Any] | None = None
    ) -> None:
        """Close with ``code`` even where Daphne cannot: it hands an ASGI close code to
        autobahn's ``sendClose()``, which raises for anything but 1000 and 3000-4999
        (1001, 1012). ``sendCloseFrame()`` is what Daphne itself uses to send 1011. The
        connection is found from Daphne's ``send``, or, where a middleware outside
        GracefulASGI wrapped it (Sentry's does), from the task Daphne runs the app in."""
        protocol = Daphne.websocket_protocol(send)
        if protocol is None and self.daphne is not None and task is not None:
            protocol = self.daphne.websocket_running(task)
        if protocol is None or code == 1000 or 3000 <= code <= 4999:
            await super().close_websocket(send, code)
            return
        details = protocol.server.connections.get(protocol)
        if details is None or details.get("disconnected"):
            return  # what Daphne's own send does for a connection that is gone
        protocol.sendCloseFrame(code=code, isReply=False)

    # -- Daphne -> our sequence -------------------------------------------------------

    def _before_reactor_stops(self, server: Any) -> Any:
        """Our replacement for ``kill_all_applications``: the reactor serves on until
        the Deferred fires, then closes every connection."""
        from twisted.internet.defer import Deferred

        assert self.control is not None
        return Deferred.fromFuture(self.control.loop.create_task(self._finish(server)))

    async def _finish(self, server: Any) -> None:
        assert self.control is not None and self.daphne is not None
        try:
            await self._wait_stopped(self.control)
        except Exception:
            logger.exception("shutdown failed; Daphne stops now")
        try:
            await Daphne.cancel_leftovers(server)
            # Twisted drops every connection next, unflushed bytes included.
            deadline = self.control.exit_deadline()
            while time.monotonic() < deadline:
                if not self.daphne.still_writing():
                    break
                await asyncio.sleep(FLUSH_POLL)
        except Exception:
            logger.exception("could not end Daphne's remaining requests cleanly")

    async def _wait_stopped(self, control: Control) -> None:
        """Our sequence to STOPPED (bounded), begun now if the reactor was stopped by
        anyone but us."""
        if not control.stopping:
            logger.info("Daphne's reactor is stopping: draining first")
        remaining = control.exit_deadline() - time.monotonic()
        try:
            await asyncio.wait_for(control.stopped("reactor stop"), max(remaining, 0))
        except TimeoutError:
            logger.error("shutdown did not reach STOPPED within its budget; Daphne stops now")
