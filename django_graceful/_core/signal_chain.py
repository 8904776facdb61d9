"""Chaining the OS signals SIGTERM/SIGINT: we see one first, the server's handler gets it later.

(Not Django's signals: those django_graceful sends are in ``django_graceful.signals``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("django_graceful")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ChainedSignals:
    """Our handler for SIGTERM/SIGINT in front of whatever the server installed.

    Works whether the server used ``signal.signal`` or ``loop.add_signal_handler``.
    ``forward(signum)`` later runs the server's own handler, as if the signal had
    just arrived.

    A signal this process ignores (``SIG_IGN``: SIGINT in a background job, or a server
    that leaves the signal to a parent process) stays ignored unless ``chain_ignored``:
    otherwise the drain would start and end in a refusal of every request, with no
    server handler to stop the process afterwards. An adapter that can stop its server
    without the server's handler (Daphne) chains them.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_signal: Callable[[int], None],
        *,
        chain_ignored: bool = False,
    ) -> None:
        self._loop = loop
        self._on_signal = on_signal
        self._chain_ignored = chain_ignored
        self._previous: dict[int, Callable[[int], None]] = {}

    def install(self) -> bool:
        """Install in front of the current handlers; False if not possible here."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning(
                "not in the main thread: cannot see SIGTERM/SIGINT; draining will start "
                "when the server sends lifespan.shutdown"
            )
            return False
        loop_handlers: dict[int, asyncio.Handle] = getattr(self._loop, "_signal_handlers", {})
        for signum in SIGNALS:
            if signum in loop_handlers:
                handle = loop_handlers[signum]
                self._previous[signum] = _loop_handler_caller(handle)
                self._loop.add_signal_handler(signum, self._on_signal, signum)
            else:
                current = signal.getsignal(signum)
                if current == signal.SIG_IGN and not self._chain_ignored:
                    logger.info(
                        "%s is ignored in this process: left ignored", signal.Signals(signum).name
                    )
                    continue
                self._previous[signum] = _python_handler_caller(current)
                signal.signal(signum, self._handle)
        return True

    def _handle(self, signum: int, frame: Any) -> None:
        # Runs in the main thread between two bytecodes: only schedule.
        self._loop.call_soon_threadsafe(self._on_signal, signum)

    def forward(self, signum: int) -> None:
        """Run the handler the server had installed for ``signum``."""
        previous = self._previous.get(signum)
        if previous is not None:
            previous(signum)


def _loop_handler_caller(handle: asyncio.Handle) -> Callable[[int], None]:
    def call(signum: int) -> None:
        handle._callback(*handle._args)  # type: ignore[attr-defined]

    return call


def _python_handler_caller(handler: Any) -> Callable[[int], None]:
    if callable(handler):
        return lambda signum: handler(signum, None)
    if handler == signal.SIG_IGN:
        return lambda signum: None

    def default(signum: int) -> None:
        # SIG_DFL (or a handler not installed from Python): let the default action happen.
        with contextlib.suppress(ValueError):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return default
