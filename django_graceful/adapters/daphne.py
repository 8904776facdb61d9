"""Daphne: Twisted's shutdown waits for our STOPPED, then cancels what is left without hanging."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core.phases import EXIT_SLACK, Phase
from .._core.process import in_loop_thread
from .._serving.protocol import SHUTTING_DOWN_BODY, refuse_http
from ._compat import fall_back, installed_version, version_problem
from .base import ServerAdapter

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: The Daphne versions whose internals (server.py, http_protocol.py) this was read against.
MIN_VERSION, BELOW_VERSION = (4, 1), (5,)
#: How long the final cancel of leftover application instances may take before Twisted
#: closes every connection and the process exits (Daphne's own waits forever).
LEFTOVER_WAIT = 0.1
#: How often (every 10 ms) to check that a last 503 has left before Twisted drops its connection.
FLUSH_CHECKS = 20


def running(modules: dict[str, ModuleType]) -> bool:
    """True in a Daphne process: its asyncio reactor runs, and it runs this very loop."""
    if "daphne.server" not in modules:
        return False
    reactor = modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None or not getattr(reactor, "running", False):
        return False
    return in_loop_thread(loop)


class Adapter(ServerAdapter):
    """Chains the signals like the generic adapter (Twisted stops the reactor only at
    our STOPPED), and replaces Daphne's "before shutdown" trigger
    ``Server.kill_all_applications``: that one cancels every request at once, raises
    ``KeyError`` on a connection still sending its request (leaving the other requests
    uncancelled) and waits forever for a task that swallows its cancellation.
    """

    name = "daphne"
    #: Daphne in a background job ignores SIGINT; stopping the reactor ourselves
    #: (``release_server``) makes ``kill -INT`` a graceful stop there too.
    chain_ignored_signals = True

    def __init__(self) -> None:
        super().__init__()
        self.reactor: Any = None
        self.servers: list[Any] = []

    def whole_server_stops(self) -> bool:
        """Daphne is one process: whatever stops it (a signal, ``reactor.stop()``) stops
        the server."""
        return True

    def engage(self, lifecycle: Lifecycle) -> None:
        super().engage(lifecycle)
        try:
            problem = self._take_over_shutdown()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            fall_back(
                "Daphne",
                problem,
                "once our shutdown is over, Daphne's own stop applies (it waits forever "
                "for a request that ignores its cancel)",
            )
            return
        lifecycle.on_phase(self._on_phase, this_cycle=True)

    def _take_over_shutdown(self) -> str | None:
        """Swap Daphne's trigger for ours; the reason if that is not possible here."""
        problem = version_problem("Daphne", installed_version("daphne"), MIN_VERSION, BELOW_VERSION)
        if problem is not None:
            return problem
        reactor = sys.modules["twisted.internet.reactor"]
        server_class = sys.modules["daphne.server"].Server
        event = getattr(reactor, "_eventTriggers", {}).get("shutdown")
        if event is None or getattr(event, "state", None) != "BASE":
            return "the reactor's shutdown event is not where Twisted 26 keeps it"
        candidates = [
            getattr(trigger, "__self__", None)
            for trigger, args, kwargs in event.before
            if getattr(trigger, "__name__", "") == "kill_all_applications" and not args
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
            reactor.addSystemEventTrigger("before", "shutdown", self._before_reactor_stops, server)
        self.reactor = reactor
        self.servers = servers
        return None

    # -- our sequence -> Daphne -------------------------------------------------------

    def _on_phase(self, phase: Phase) -> None:
        if phase == Phase.DRAINING:
            # Daphne cancels an app that outlives its closed connection by
            # application_close_timeout ("took too long to shut down and was killed");
            # while we shut down, our phases decide (and name what hangs).
            assert self.lifecycle is not None
            extra = self.lifecycle.budget() + EXIT_SLACK
            for server in self.servers:
                server.application_close_timeout += extra

    def release_server(self, signum: int | None) -> None:
        if self.reactor is None:
            super().release_server(signum)
        else:
            self._stop_reactor()

    def _stop_reactor(self) -> None:
        """What Twisted's SIGTERM/SIGINT handler does, also when Twisted installed none
        (SIGINT ignored in a background job, ``Server(signal_handlers=False)``)."""
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping: our trigger started the shutdown

    async def close_websocket(self, send: Any, code: int) -> None:
        """Close with ``code`` even where Daphne cannot: it hands an ASGI close code to
        autobahn's ``sendClose()``, which raises for anything but 1000 and 3000-4999
        (1001, 1012). ``sendCloseFrame()`` is what Daphne itself uses to send 1011."""
        protocol = _websocket_protocol(send)
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

        assert self.lifecycle is not None
        loop = self.lifecycle.loop or asyncio.get_running_loop()
        return Deferred.fromFuture(loop.create_task(self._finish(server)))

    async def _finish(self, server: Any) -> None:
        try:
            await self._wait_stopped()
        except Exception:
            logger.exception("shutdown failed; Daphne stops now")
        try:
            await _cancel_leftovers(server)
            answered = await _answer_unanswered(server)
            # Twisted drops every connection next, unflushed bytes included.
            for _ in range(FLUSH_CHECKS):
                if not set(answered) & set(self.reactor.getWriters()):
                    break
                await asyncio.sleep(0.01)
        except Exception:
            logger.exception("could not end Daphne's remaining requests cleanly")

    async def _wait_stopped(self) -> None:
        """Run our sequence to STOPPED (bounded), if the reactor was stopped by anyone
        but us: a signal we could not chain, an app raising KeyboardInterrupt, or an
        embedding program calling ``reactor.stop()``."""
        lifecycle = self.lifecycle
        assert lifecycle is not None
        if lifecycle.phase >= Phase.STOPPED:
            return
        if lifecycle.shutdown_began is None:
            logger.info("Daphne's reactor is stopping: draining first")
            lifecycle.begin_shutdown("reactor stop")
        began = lifecycle.shutdown_began or time.monotonic()
        remaining = lifecycle.budget() + EXIT_SLACK / 2 - (time.monotonic() - began)
        try:
            await asyncio.wait_for(lifecycle.shutdown("reactor stop"), max(remaining, 0))
        except TimeoutError:
            logger.error("shutdown did not reach STOPPED within its budget; Daphne stops now")


def _websocket_protocol(send: Any) -> Any:
    """The autobahn protocol behind a Daphne websocket's ``send`` (``partial(handle_reply,
    protocol)``), or None."""
    server = getattr(getattr(send, "func", None), "__self__", None)
    args: tuple[Any, ...] = getattr(send, "args", ())
    if getattr(send, "func", None) != getattr(server, "handle_reply", None) or len(args) != 1:
        return None
    protocol = args[0]
    if not callable(getattr(protocol, "sendCloseFrame", None)) or not isinstance(
        getattr(getattr(protocol, "server", None), "connections", None), dict
    ):
        return None
    return protocol


async def _cancel_leftovers(server: Any) -> None:
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


async def _answer_unanswered(server: Any) -> list[Any]:
    """Answer 503 where the app was called but never began a response (it swallowed
    every cancel), rather than leave the client to Twisted's dropped connection.

    Returns the transports written to.
    """
    answered = []
    for protocol, details in list(server.connections.items()):
        if (
            "disconnected" in details
            or getattr(protocol, "application_queue", None) is None  # still uploading
            or getattr(protocol, "_response_started", True)  # also: not an HTTP request
            or getattr(protocol, "finished", True)
        ):
            continue

        async def send(message: Any, protocol: Any = protocol) -> None:
            protocol.handle_reply(message)

        try:
            await refuse_http(send, SHUTTING_DOWN_BODY)
        except Exception:
            logger.debug("could not answer %r", protocol, exc_info=True)
        else:
            answered.append(getattr(protocol, "transport", None))
    return answered
