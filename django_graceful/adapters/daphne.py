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

What it reads of Daphne and Twisted that they do not document is all in :class:`Daphne`
(the probe), checked against Daphne 4.1.0 and 4.2.3 with Twisted 26.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core.driver import Control, Driver
from .._core.phases import EXIT_SLACK, Phase
from .._core.process import in_loop_thread
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
      ``sendCloseFrame()``.
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

    def attach(self, control: Control, *, handle_signals: bool) -> None:
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

    def phase_changed(self, phase: Phase) -> None:
        if self.daphne is None or self.control is None:
            return
        if phase == Phase.DRAINING:
            # Until the watchdog's bound, a half EXIT_SLACK after the exit deadline.
            extra = self.control.exit_deadline() + EXIT_SLACK / 2 - time.monotonic()
            self.daphne.lift_close_timeout(extra)
        elif phase == Phase.CLOSING:
            self._read_at_closing = set(self.daphne.reading())

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
