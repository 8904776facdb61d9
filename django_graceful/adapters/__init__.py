"""How the lifecycle meets the running server: the generic adapter and server detection.

The generic adapter chains SIGTERM/SIGINT: the first signal starts our shutdown at
once, and is handed to the server's own handler only when our shutdown is STOPPED
(until then the server keeps accepting, and we answer new requests with 503).
Later signals escalate our shutdown; a repeat within ``SAME_SIGNAL_WINDOW`` is the
same signal (Ctrl-C in a terminal reaches a server's parent and its workers).
Server-specific adapters (one module each) adjust what the server would otherwise
do wrong: kill requests at once (Daphne) or wait forever (Uvicorn, Granian).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from .._core.os_signals import ChainedSignals

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: Seconds within which a repeated signal counts as the first one.
SAME_SIGNAL_WINDOW = 1.0


class ServerAdapter:
    name = "generic"
    #: Also take SIGTERM/SIGINT where the process ignores them (see ChainedSignals): only
    #: for an adapter whose ``hand_on`` stops the server without the server's handler.
    chain_ignored_signals = False

    def __init__(self) -> None:
        self.lifecycle: Lifecycle | None = None
        self.signals: ChainedSignals | None = None
        self._first_signal: int | None = None
        self._first_signal_at = 0.0
        self._released = False

    def engage(self, lifecycle: Lifecycle) -> None:
        """Called once, in the loop thread, when startup has completed."""
        self.lifecycle = lifecycle
        if lifecycle.settings.HANDLE_SIGNALS and lifecycle.loop is not None:
            chained = ChainedSignals(
                lifecycle.loop, self.on_signal, chain_ignored=self.chain_ignored_signals
            )
            if chained.install():
                self.signals = chained

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

    def stopped(self) -> None:
        """Our shutdown reached STOPPED: the server may now stop in its own way."""
        self.release_server()

    def release_server(self) -> None:
        """Let the server begin its own stop, once."""
        if self._released:
            return
        self._released = True
        if self._first_signal is not None:
            self.hand_on(self._first_signal)
        else:
            self.server_stop_without_signal()

    def hand_on(self, signum: int) -> None:
        if self.signals is not None:
            self.signals.forward(signum)

    def server_stop_without_signal(self) -> None:
        """The shutdown began without a signal (e.g. lifespan.shutdown): nothing to do."""

    async def close_websocket(self, send: Any, code: int) -> None:
        """Close an accepted websocket with ``code`` (1012) at shutdown, through the
        server's ``send``; a server that refuses such codes over ASGI overrides this."""
        await send({"type": "websocket.close", "code": code})

    def startup_failed(self, error: Exception) -> None:
        """Startup failed (already logged); the server is about to end this process."""


def detect() -> ServerAdapter:
    """The adapter for the server this process runs under."""
    from . import daphne, granian, hypercorn, uvicorn

    for module in (daphne, uvicorn, hypercorn, granian):
        if module.running(sys.modules):
            return module.Adapter()
    return ServerAdapter()
