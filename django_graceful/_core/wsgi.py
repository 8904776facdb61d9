"""A process serving WSGI: no lifespan and no phases, and what stands in for them.

Under WSGI (``manage.py runserver`` without Daphne, Gunicorn's sync and gthread workers, any
WSGI server) no ASGI lifespan ever arrives, so the lifecycle stays NEW: the LIFESPAN managers and
the startup and shutdown hooks never run, nothing drains, and no request is cancelled by a
disconnect or a shutdown. What stays useful is kept working, each part in the way WSGI
allows:

- a WSGI request is told apart by its class, Django's ``WSGIRequest`` (:func:`is_wsgi`);
  GracefulMiddleware marks the request's context (:func:`in_request`), for ``spawn()``,
  and gives it a token, untracked, which only ``@cancellable``'s timeout cancels (its SQL
  statement stops then, as under ASGI);
- ``request.state`` is a :class:`WSGIState`: empty, and a missing key raises
  :class:`LifespanStateUnavailable` (a ``KeyError``) naming the managers that did not run;
- the first WSGI request logs once what does not run here (:func:`note_first_request`);
- ``spawn()`` in a WSGI request (or outside any loop in a process that served one) runs
  its task on an event loop of ours, in a thread of its own (:func:`task_loop`): a
  request's loop (``async_to_sync``'s) ends with its view, and would cancel the task;
- at the interpreter's exit (Ctrl-C on runserver, a Gunicorn sync worker stopping), the
  ``start_thread`` threads are told to stop and the spawned tasks are cancelled at once
  (there is no grace: nothing else tells a task the process ends; a ``shield()`` in it
  holds the cancel back for its critical section), all of them waited for within
  ``GRACE_PERIOD + CANCEL_TIMEOUT`` (:func:`at_exit`). A process ended by a signal it
  does not handle (SIGTERM to runserver) ends at once.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import logging
import os
import threading
import time
from typing import Any

from django.core.handlers.wsgi import WSGIRequest

from .. import signals
from .cancellation import CancelReason
from .hooks import hook_name, receivers
from .lifecycle import get_lifecycle
from .phases import Phase
from .registry import Tracked, WorkKind

logger = logging.getLogger("django_graceful")

#: The most ``spawn()`` waits for the task loop to take a task (it only creates it there): a
#: loop this slow to answer is blocked by a task, and the caller is told so.
HANDOVER_TIMEOUT = 5.0
#: How often (seconds) :func:`at_exit` looks whether the work it stopped has ended.
EXIT_POLL = 0.02

#: Set for the time of a WSGI request (by GracefulMiddleware); ``async_to_sync`` carries it
#: into an async view's loop, and ``spawn()`` into the tasks it starts.
_in_request: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "django_graceful_wsgi", default=False
)
#: Guards the first-request notice and the task loop's start (requests come on threads).
_lock = threading.Lock()
_noticed = False
_exit_registered = False
_loop: asyncio.AbstractEventLoop | None = None


def is_wsgi(request: object) -> bool:
    """Whether ``request`` came through a WSGI handler (Django's test ``Client`` too)."""
    return isinstance(request, WSGIRequest)


def in_request() -> bool:
    """Whether the caller runs for a WSGI request (in its view, or a task it spawned)."""
    return _in_request.get()


def served() -> bool:
    """Whether this process has served a WSGI request (through GracefulMiddleware)."""
    return _noticed


def enter_request() -> contextvars.Token[bool]:
    return _in_request.set(True)


def leave_request(token: contextvars.Token[bool]) -> None:
    _in_request.reset(token)


class LifespanStateUnavailable(KeyError):
    """``request.state[key]`` under WSGI: the LIFESPAN managers that would set it never ran."""

    def __str__(self) -> str:  # KeyError's own would show the message quoted
        return str(self.args[0])


class WSGIState(dict[str, Any]):
    """``request.state`` under WSGI: empty (no LIFESPAN manager ran); a view may still put
    what it likes into it for its own request. ``state.get(key)`` and ``key in state``
    work as on any dict; ``state[key]`` of a missing key says why it is missing."""

    def __missing__(self, key: str) -> Any:
        lifecycle = get_lifecycle()
        if lifecycle.phase != Phase.NEW:  # a test's lifespan, and Django's test Client
            raise LifespanStateUnavailable(
                f"request.state[{key!r}]: this request came through WSGI (Django's test "
                "Client?): the lifespan that runs in this process gives its state to ASGI "
                "requests only (AsyncClient, graceful_app.open())"
            )
        managers = lifecycle.settings.LIFESPAN
        ran = (
            f"the LIFESPAN managers ({', '.join(managers)}) did not run"
            if managers
            else "GRACEFUL['LIFESPAN'] is empty"
        )
        raise LifespanStateUnavailable(
            f"request.state[{key!r}]: this request came through WSGI, where no ASGI lifespan "
            f"runs: {ran}, and request.state is empty. Serve the project with an ASGI "
            "server (uvicorn, daphne, or runserver with 'daphne' in INSTALLED_APPS) to have "
            "the state, or read it with request.state.get()."
        )


def note_first_request() -> None:
    """Log once per process, at its first WSGI request, what does not run under WSGI."""
    global _noticed
    if _noticed:
        return
    with _lock:
        if _noticed:
            return
        _noticed = True
    stop_at_exit()
    lifecycle = get_lifecycle()
    if lifecycle.phase != Phase.NEW:
        return  # a lifecycle runs in this process (a test's): it is the one that counts
    managers = lifecycle.settings.LIFESPAN
    hooks = [
        hook_name(receiver)
        for signal in (signals.startup, signals.shutdown_started, signals.shutdown)
        for receiver in receivers(signal, type(lifecycle))
    ]
    missing = []
    if managers:
        missing.append(f"LIFESPAN managers ({', '.join(managers)}); request.state is empty")
    if hooks:
        missing.append(f"startup and shutdown hooks ({', '.join(hooks)})")
    if missing:
        logger.warning(
            "this process serves WSGI, where no ASGI lifespan runs. Not "
            "run here: %s. Readiness answers 200 while the process serves; nothing drains "
            "or cancels requests.",
            "; ".join(missing),
        )
    else:
        logger.info(
            "this process serves WSGI: no lifecycle (readiness answers 200 "
            "while the process serves; nothing drains or cancels requests)"
        )


def task_loop() -> asyncio.AbstractEventLoop:
    """The event loop ``spawn()`` runs a WSGI request's tasks on (started when first
    needed, in a daemon thread of its own, for the rest of the process)."""
    global _loop
    stop_at_exit()
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="django_graceful-wsgi-tasks", daemon=True
            ).start()
            _loop = loop
        return _loop


def in_task_loop() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def call_in_task_loop(fn: Any) -> Any:
    """``fn()`` run in the task loop's thread, its result (or exception) returned here."""
    loop = task_loop()
    if in_task_loop():
        return fn()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:
            done.set_exception(exc)

    loop.call_soon_threadsafe(run)
    try:
        return done.result(HANDOVER_TIMEOUT)
    except concurrent.futures.TimeoutError:
        raise RuntimeError(
            f"django_graceful's WSGI task loop did not answer within {HANDOVER_TIMEOUT:g} s: "
            "a spawned task blocks it (a blocking call in async code)"
        ) from None


def stop_at_exit() -> None:
    """Have :func:`at_exit` run at the interpreter's exit (once, however often asked)."""
    global _exit_registered
    with _lock:
        if _exit_registered:
            return
        _exit_registered = True
    atexit.register(at_exit)


def at_exit() -> None:
    """At the interpreter's exit: tell the ``start_thread`` threads to stop and cancel the
    spawned tasks, then wait for them within ``GRACE_PERIOD + CANCEL_TIMEOUT``; log what
    still runs. Only where no lifecycle ran (one that ran stopped its work itself)."""
    lifecycle = get_lifecycle()
    if lifecycle.phase != Phase.NEW:
        return
    work = [item for item in lifecycle.registry if _running(item)]
    if not work:
        return
    settings = lifecycle.settings
    budget = settings.GRACE_PERIOD + settings.CANCEL_TIMEOUT
    logger.info(
        "exit: stopping %d background thread(s) and task(s) (at most %g s)", len(work), budget
    )
    loop = _loop
    for item in work:
        if item.kind == WorkKind.THREAD and item.on_closing is not None:
            item.on_closing()
        elif item.kind == WorkKind.TASK and loop is not None:
            loop.call_soon_threadsafe(item.cancel, CancelReason.SHUTDOWN)
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline and any(_running(item) for item in work):
        time.sleep(EXIT_POLL)
    for item in work:
        if _running(item):
            logger.warning(
                "exit: %s still running after %g s; it ends with the process",
                item.describe(),
                budget,
            )


def _running(item: Tracked) -> bool:
    """Whether ``item`` is background work of this process that still runs: a
    ``start_thread`` thread alive, or a task of our task loop not done. (A process forked
    from one that started them, Gunicorn's ``--preload``, has neither: its threads did not
    come along, and its task loop is a new one.)"""
    if item.kind == WorkKind.THREAD:
        return item.thread is not None and item.thread.is_alive()
    if item.kind == WorkKind.TASK:
        task = item.task
        return (
            task is not None and _loop is not None and task.get_loop() is _loop and not task.done()
        )
    return False


def _forget_task_loop() -> None:
    """In a forked child: the task loop's thread did not come along; a new one is made
    when first needed."""
    global _loop, _lock
    _loop = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows (which does not fork)
    os.register_at_fork(after_in_child=_forget_task_loop)
