"""How the lifecycle meets the running server: the generic adapter and server detection.

The generic adapter chains SIGTERM/SIGINT: the first signal starts our shutdown at
once, and is handed to the server's own handler when DRAINING ends (so the server
stops accepting only then). Later signals escalate our shutdown and are handed on.
Server-specific adapters (one module each) adjust what the server would otherwise
do wrong: kill requests at once (Daphne) or wait forever (Uvicorn, Granian).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING

from ..os_signals import ChainedSignals

if TYPE_CHECKING:
    from ..lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")


class ServerAdapter:
    name = "generic"

    def __init__(self) -> None:
        self.lifecycle: Lifecycle | None = None
        self.signals: ChainedSignals | None = None
        self._first_signal: int | None = None
        self._released = False

    def engage(self, lifecycle: Lifecycle) -> None:
        """Called once, in the loop thread, when startup has completed."""
        self.lifecycle = lifecycle
        if lifecycle.settings.HANDLE_SIGNALS and lifecycle.loop is not None:
            chained = ChainedSignals(lifecycle.loop, self.on_signal)
            if chained.install():
                self.signals = chained

    def on_signal(self, signum: int) -> None:
        """A SIGTERM/SIGINT arrived (called in the loop thread)."""
        assert self.lifecycle is not None
        name = signal.Signals(signum).name
        if self._first_signal is None:
            self._first_signal = signum
            logger.info("%s received: draining", name)
            self.lifecycle.begin_shutdown(name)
            self.lifecycle.arm_watchdog()
            return
        self.lifecycle.escalate()
        if self._released:
            self.hand_on(signum)
        else:
            self.release_server()

    def release_server(self) -> None:
        """DRAINING is over: let the server begin its own stop (stop accepting)."""
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

    def stopped(self) -> None:
        """Our shutdown reached STOPPED."""


def detect() -> ServerAdapter:
    """The adapter for the server this process runs under."""
    from . import daphne, granian, hypercorn, uvicorn

    for module in (daphne, uvicorn, hypercorn, granian):
        if module.running(sys.modules):
            return module.Adapter()
    return ServerAdapter()
