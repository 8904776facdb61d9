"""The adapter contract, and the generic adapter: how the lifecycle meets the running server.

The generic adapter chains SIGTERM/SIGINT: the first signal starts our shutdown at
once, and is handed to the server's own handler only when our shutdown is STOPPED
(until then the server keeps accepting, and we answer new requests with 503).
Later signals escalate our shutdown; a repeat within ``SAME_SIGNAL_WINDOW`` is the
same signal (Ctrl-C in a terminal reaches a server's parent and its workers).
Server-specific adapters (one module each) adjust what the server would otherwise
do wrong: kill requests at once (Daphne) or wait forever (Uvicorn, Granian).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

from .._core.signal_chain import ChainedSignals

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: Seconds within which a repeated signal counts as the first one.
SAME_SIGNAL_WINDOW = 1.0


class ServerAdapter:
    """What the lifecycle asks of the server it runs under. One adapter per process,
    found by ``adapters.detect()`` once startup has completed.

    The lifecycle calls, in the loop thread:

    - ``engage(lifecycle)`` once, when startup has completed: find the server's
      internals, chain the signals, check versions (falling back to this generic
      behaviour with one warning when something is not where expected);
    - ``stopped()`` when our shutdown is STOPPED: finish what the server would get
      wrong (e.g. answer hung requests) and then ``release()`` the server;
    - ``disengage()`` right after: put back the signal handlers ``engage`` chained, so
      that a process that goes on (tests: one lifespan cycle each) gets its own back;
    - ``close_websocket(send, code)`` to close an accepted websocket at shutdown;
    - ``startup_failed(error)`` when startup failed, to make it visible.

    The adapter calls ``lifecycle.begin_shutdown()`` when the server is told to stop
    (``on_signal``), and ``release()`` hands the stop to the server, once.
    ``release_server(signum)`` is the one method that lets the server stop in its own
    way: with the signal it got first, or ``None`` when the shutdown began without one.
    """

    name = "generic"
    #: Also take SIGTERM/SIGINT where the process ignores them (see ChainedSignals): only
    #: for an adapter whose ``release_server`` stops the server without its handler.
    chain_ignored_signals = False

    def __init__(self) -> None:
        self.lifecycle: Lifecycle | None = None
        self.chain: ChainedSignals | None = None
        self._first_signal: int | None = None
        self._first_signal_at = 0.0
        self._released = False
        self._kept: set[asyncio.Task[Any]] = set()

    def engage(self, lifecycle: Lifecycle) -> None:
        """Called once, in the loop thread, when startup has completed."""
        self.lifecycle = lifecycle
        if lifecycle.settings.HANDLE_SIGNALS and lifecycle.loop is not None:
            chained = ChainedSignals(
                lifecycle.loop,
                self.on_signal,
                chain_ignored=self.chain_ignored_signals,
                # Where no server runs (a test client's thread) that is no news.
                off_main_thread=logging.INFO if self.name == "generic" else logging.WARNING,
            )
            if chained.install():
                self.chain = chained

    def disengage(self) -> None:
        """The cycle is STOPPED: put back the signal handlers ``engage`` chained (where
        nothing replaced ours since). ``release()`` still reaches the server's."""
        if self.chain is not None:
            self.chain.restore()

    def on_signal(self, signum: int) -> None:
        """A SIGTERM/SIGINT arrived (called in the loop thread)."""
        assert self.lifecycle is not None
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self._first_signal is None:
            self._first_signal = signum
            self._first_signal_at = now
            logger.info("%s received: draining", name)
            self.lifecycle.begin_shutdown(name)
            self.lifecycle.arm_watchdog()
        elif now - self._first_signal_at >= SAME_SIGNAL_WINDOW:
            self.lifecycle.escalate()

    def whole_server_stops(self) -> bool:
        """Whether the server as a whole is stopping, not this worker alone while its
        siblings serve on: then, at the end of our shutdown, new connections are refused
        at the listening sockets (shared by every worker) before the server closes them.
        Here: our shutdown began with a signal to this process."""
        return self._first_signal is not None

    def stopped(self) -> None:
        """Our shutdown reached STOPPED: the server may now stop in its own way."""
        self.release()

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a reference to a task of ours until it ends (the loop holds only a weak one)."""
        self._kept.add(task)
        task.add_done_callback(self._kept.discard)

    def release(self) -> None:
        """Hand the stop to the server, once."""
        if self._released:
            return
        self._released = True
        self.release_server(self._first_signal)

    def release_server(self, signum: int | None) -> None:
        """Let the server stop in its own way: run its handler for the first signal.
        Without a signal (e.g. ``lifespan.shutdown``) the server is stopping already."""
        if signum is not None and self.chain is not None:
            self.chain.forward(signum)

    async def close_websocket(self, send: Any, code: int) -> None:
        """Close an accepted websocket with ``code`` (1012) at shutdown, through the
        server's ``send``; a server that refuses such codes over ASGI overrides this."""
        await send({"type": "websocket.close", "code": code})

    def startup_failed(self, error: Exception) -> None:
        """Startup failed (already logged); the server is about to end this process."""
