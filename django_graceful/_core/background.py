"""Background work the shutdown knows about: tracked tasks (spawn) and threads (start_thread)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from . import wsgi
from .lifecycle import get_lifecycle
from .phases import Phase
from .process import in_loop_thread
from .registry import Tracked, WorkKind, use_item

logger = logging.getLogger("django_graceful")


class ShutdownInProgress(RuntimeError):
    """New background work was started after the shutdown began."""


def spawn(coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
    """Run ``coro`` as a task the shutdown knows about.

    It may finish during the grace period (CLOSING); then it is cancelled with
    reason SHUTDOWN and awaited within ``CANCEL_TIMEOUT``; what still runs is
    reported as hung. Its exception is logged, never lost. Inside it,
    ``current_cancellation()`` is the task's own token (and the task is the work its
    code runs for: a ``shield()`` in it holds back the task's cancels).

    Under WSGI, where no lifecycle runs (in a WSGI request, or outside any event loop in
    a process that serves WSGI), the task runs on an event loop of django_graceful's, in
    a thread of its own, and outlives the request: the returned task is that loop's, not
    to be awaited in the view. It is cancelled at the process's exit (``_core/wsgi.py``).
    """
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"spawn() takes a coroutine, not {coro!r}")
    label = name or str(getattr(coro, "__qualname__", repr(coro)))
    lifecycle = get_lifecycle()
    if lifecycle.shutting_down:
        coro.close()
        raise ShutdownInProgress(
            f"cannot spawn {label!r}: the shutdown began ({lifecycle.phase.name.lower()})"
        )
    item = Tracked(WorkKind.TASK, label)
    context = contextvars.copy_context()
    context.run(use_item, item)

    def start(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any]:
        task = loop.create_task(coro, name=label, context=context)
        item.task = task
        lifecycle.registry.add(item)
        task.add_done_callback(lambda done: _task_done(done, item))
        return task

    if _on_wsgi_task_loop():
        task: asyncio.Task[Any] = wsgi.call_in_task_loop(lambda: start(asyncio.get_running_loop()))
        return task
    return start(asyncio.get_running_loop())  # RuntimeError outside the loop, as create_task


def _on_wsgi_task_loop() -> bool:
    """Whether a task spawned now runs on the WSGI task loop: for a WSGI request (an async
    view's loop, ``async_to_sync``'s, ends with the view), or outside any event loop in a
    process that serves WSGI (a streaming response's iterator, a thread of the project's)."""
    lifecycle = get_lifecycle()
    if lifecycle.loop is not None and in_loop_thread(lifecycle.loop):
        return False
    if wsgi.in_request():
        return True
    return lifecycle.phase == Phase.NEW and wsgi.served() and not in_loop_thread()


def _task_done(task: asyncio.Task[Any], item: Tracked) -> None:
    get_lifecycle().registry.discard(item)
    if task.cancelled():
        return
    error = task.exception()  # retrieved: asyncio logs no "never retrieved"
    if error is not None:
        logger.error(
            "spawned task %s raised %s: %s", item.what, type(error).__name__, error, exc_info=error
        )


def start_thread(target: Callable[[threading.Event], Any], *, name: str) -> threading.Thread:
    """Run ``target(stop)`` in a thread the shutdown knows about.

    ``stop`` is set when CLOSING begins (the grace period); the shutdown waits for
    the thread to return within the grace and ``CANCEL_TIMEOUT``. A thread that
    ignores ``stop`` is reported with its stack and never holds the process: it
    is a daemon thread, ended with the process when the budget is spent. So a
    target must finish its critical work (e.g. a last flush) before it returns,
    promptly once ``stop`` is set.
    """
    if not callable(target):
        raise TypeError(f"start_thread() takes a callable, not {target!r}")
    lifecycle = get_lifecycle()
    if lifecycle.shutting_down:
        raise ShutdownInProgress(
            f"cannot start thread {name!r}: the shutdown began ({lifecycle.phase.name.lower()})"
        )
    stop = threading.Event()
    item = Tracked(WorkKind.THREAD, name, on_closing=stop.set)
    item.token.on_cancel(lambda reason: stop.set())

    def run() -> None:
        try:
            target(stop)
        except Exception:
            logger.exception("thread %s raised", name)
        finally:
            lifecycle.call_soon(lifecycle.registry.discard, item)

    wsgi.stop_at_exit()  # where no lifecycle runs (WSGI), it is told to stop at the exit
    thread = threading.Thread(target=run, name=name, daemon=True)
    item.thread = thread
    lifecycle.registry.add(item)
    thread.start()
    return thread
