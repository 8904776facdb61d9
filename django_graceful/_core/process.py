"""Facts about the running process and its last resort: which thread we are in, and
ending the process at once with every log line out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading

logger = logging.getLogger("django_graceful")


def in_main_thread() -> bool:
    """Signal handlers can only be installed from the main thread."""
    return threading.current_thread() is threading.main_thread()


def in_loop_thread(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether the caller runs in ``loop`` (so it may touch the loop's objects directly);
    without one, whether it runs in any event loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return loop is None or running is loop


def flush_output() -> None:
    """Flush every logging handler and the standard streams: ``os._exit`` and a signal's
    default action skip Python's own flushing."""
    for handler in [*logging.getLogger().handlers, *logger.handlers]:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def end_process(status: int, signum: int | None = None) -> None:
    """End the process at once (no atexit, no waiting threads), its output flushed: by
    ``signum``'s default action (as a server that re-raises the signal that stopped it),
    else with ``status``."""
    flush_output()
    if signum is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        status = 128 + signum  # only if the signal is blocked in this thread
    os._exit(status)
