"""Bounded waits: run a coroutine or a sync callable with a deadline that nothing can extend."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync, iscoroutinefunction

#: How long a cancelled coroutine gets to unwind before we stop waiting for it.
UNWIND = 0.1

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one bounded call."""

    finished: bool
    result: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.finished and self.error is None


async def bounded(awaitable: Awaitable[Any], timeout: float) -> Outcome:
    """Await ``awaitable`` for at most ``timeout`` s (plus ``UNWIND`` if it must be cancelled).

    Unlike ``asyncio.wait_for``, a coroutine that swallows its cancellation cannot
    hold the caller: it is cancelled, given ``UNWIND`` seconds, and abandoned; and one
    that raises ``SystemExit`` or ``KeyboardInterrupt`` cannot end the process (asyncio
    re-raises those out of the event loop): they are its ``error``, like any exception.
    """
    start = time.monotonic()
    task = asyncio.ensure_future(_contained(awaitable))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=UNWIND)
        if not task.done():
            task.add_done_callback(_consume)
        return Outcome(False, elapsed=time.monotonic() - start)
    return _outcome_of(task, start)


async def bounded_sync(fn: Callable[[], Any], timeout: float, name: str) -> Outcome:
    """Run ``fn`` in a daemon thread for at most ``timeout`` s.

    A daemon thread (not the loop's executor) so that a hung call can never block
    the interpreter's exit; the thread is abandoned when the deadline passes.

    The thread is started by asgiref's ``sync_to_async`` (the thread as its executor),
    so that ``async_to_sync`` inside ``fn`` runs its coroutine on this loop, as it does
    in a sync view or consumer handler. From a bare thread it would run it on a new
    loop in yet another thread, where the coroutine touches what belongs to this loop
    (a connection's ``send``, its lock, the server's futures) without waking it: a
    Channels consumer's ``self.send()`` from a sync shutdown hook could then wait for
    ever, and that other thread (a non-daemon one) hold the process's exit. What ``fn``
    still awaits here through ``async_to_sync`` when the deadline passes is cancelled.
    """

    def call() -> Any:  # a plain function whatever fn is: sync_to_async takes no other
        return fn()

    # asgiref annotates ``executor`` as a ThreadPoolExecutor; it only hands it to
    # ``loop.run_in_executor``, which takes any Executor.
    thread: Any = _OwnThread(f"graceful-hook:{name}")
    run = SyncToAsync(call, thread_sensitive=False, executor=thread)
    return await bounded(run(), timeout)


class _OwnThread(Executor):
    """Runs each call in a new daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self._name = name

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # reported to the caller, not lost in the thread
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, name=self._name, daemon=True).start()
        return future


async def bounded_call(fn: Callable[[], Any], timeout: float, name: str) -> Outcome:
    """Call a hook, sync or async, within ``timeout`` s.

    A coroutine function is awaited with :func:`bounded`; anything else runs with
    :func:`bounded_sync`, and if it returns an awaitable (a sync wrapper of an async
    function) that is awaited within the same bound.
    """
    if iscoroutinefunction(fn):
        return await bounded(fn(), timeout)
    outcome = await bounded_sync(fn, timeout, name)
    if outcome.ok and inspect.isawaitable(outcome.result):
        outcome = await bounded(outcome.result, timeout)
    return outcome


@dataclass(frozen=True, slots=True)
class _Escaped:
    """A ``SystemExit`` or ``KeyboardInterrupt`` held as the task's result, not raised."""

    error: BaseException


async def _contained(awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` inside the task: a task that raises ``SystemExit`` or
    ``KeyboardInterrupt`` has asyncio raise it again out of the event loop (the server
    exits, later hooks never run, nothing names the hook), so those are caught here."""
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:
        return _Escaped(exc)


def _outcome_of(future: asyncio.Future[Any], start: float) -> Outcome:
    elapsed = time.monotonic() - start
    if future.cancelled():
        return Outcome(True, error=asyncio.CancelledError(), elapsed=elapsed)
    error = future.exception()
    if error is not None:
        return Outcome(True, error=error, elapsed=elapsed)
    result = future.result()
    if isinstance(result, _Escaped):
        return Outcome(True, error=result.error, elapsed=elapsed)
    return Outcome(True, result=result, elapsed=elapsed)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned future's outcome so asyncio logs no 'never retrieved'."""
    if not future.cancelled():
        future.exception()
