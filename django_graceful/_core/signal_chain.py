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
    server handler to stop the process afterwards. A driver that can stop its server
    without the server's handler (Daphne) chains them.

    ``restore()`` puts back what ``install()`` replaced, once the lifecycle's cycle is
    over: a process that goes on (a test, an embedding program) gets its own handlers
    back. A handler installed after ours is left in place. If the loop closes with our
    handler still installed, the next signal finds it stepping aside: the handler from
    before is put back and runs, as if we had never been there.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_signal: Callable[[int], None],
        *,
        chain_ignored: bool = False,
        off_main_thread: int = logging.WARNING,
    ) -> None:
        """``off_main_thread``: the level of the one line saying, outside the main
        thread, that the signals cannot be seen (INFO where no server runs: a test)."""
        self._loop = loop
        self._on_signal = on_signal
        self._chain_ignored = chain_ignored
        self._off_main_thread = off_main_thread
        self._previous: dict[int, Callable[[int], None]] = {}
        #: signum -> (what we installed, what it replaced), for ``restore``.
        self._replaced: dict[int, tuple[Any, Any]] = {}

    def install(self) -> bool:
        """Install in front of the current handlers; False if not possible here."""
        if threading.current_thread() is not threading.main_thread():
            logger.log(
                self._off_main_thread,
                "not in the main thread: cannot see SIGTERM/SIGINT; draining will start "
                "when the server sends lifespan.shutdown",
            )
            return False
        loop_handlers: dict[int, asyncio.Handle] = _loop_handlers(self._loop)
        for signum in SIGNALS:
            if signum in loop_handlers:
                handle = loop_handlers[signum]
                self._previous[signum] = _loop_handler_caller(handle)
                self._loop.add_signal_handler(signum, self._on_signal, signum)
                self._replaced[signum] = (loop_handlers.get(signum), handle)
            else:
                current = signal.getsignal(signum)
                if current == signal.SIG_IGN and not self._chain_ignored:
                    logger.info(
                        "%s is ignored in this process: left ignored", signal.Signals(signum).name
                    )
                    continue
                self._previous[signum] = _python_handler_caller(current)
                signal.signal(signum, self._handle)
                self._replaced[signum] = (self._handle, current)
        return True

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced where ours is still in place; once
        (later calls do nothing). ``forward`` still reaches them afterwards."""
        if not self._replaced or threading.current_thread() is not threading.main_thread():
            return
        replaced, self._replaced = self._replaced, {}
        loop_handlers = _loop_handlers(self._loop)
        for signum, (ours, before) in replaced.items():
            if isinstance(before, asyncio.Handle):
                # The loop removes its handlers itself when it closes.
                if not self._loop.is_closed() and loop_handlers.get(signum) is ours:
                    self._loop.add_signal_handler(
                        signum,
                        before._callback,  # type: ignore[attr-defined]
                        *before._args,
                    )
            elif signal.getsignal(signum) == ours:
                # None: a handler not installed from Python, which cannot be put back.
                signal.signal(signum, signal.SIG_DFL if before is None else before)

    def _handle(self, signum: int, frame: Any) -> None:
        # Runs in the main thread between two bytecodes: only schedule.
        if self._loop.is_closed():
            # Our loop is gone and nobody restored: step aside for good, and let this
            # signal do what it would have done without us.
            self.restore()
            self.forward(signum)
            return
        self._loop.call_soon_threadsafe(self._on_signal, signum)

    def forward(self, signum: int) -> None:
        """Run the handler the server had installed for ``signum``."""
        previous = self._previous.get(signum)
        if previous is not None:
            previous(signum)


def ignore_from_now(loop: asyncio.AbstractEventLoop, signals: frozenset[int]) -> None:
    """The process is ending: ``signals`` are ignored from now on, and the loop's signal
    handlers are gone before the loop closes.

    A unix event loop closes its self-pipe (its signals' wakeup fd) before it removes its
    signal handlers, each one back to its default action: a signal in between is written
    to a closed fd (a traceback on stderr, "Exception ignored ... Bad file descriptor"),
    and a SIGTERM after its handler went ends the process. Removing the handlers first
    (the last one takes the wakeup fd with it) leaves no such moment.
    """
    for signum in list(_loop_handlers(loop)):
        loop.remove_signal_handler(signum)
        if signum in signals:
            signal.signal(signum, signal.SIG_IGN)


def _loop_handlers(loop: asyncio.AbstractEventLoop) -> dict[int, asyncio.Handle]:
    """The loop's own signal handlers (the unix event loop's; none on others)."""
    return getattr(loop, "_signal_handlers", {})


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
