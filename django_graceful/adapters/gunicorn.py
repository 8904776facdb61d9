"""Gunicorn, as one worker process sees its arbiter: what both worker-class adapters share.

Gunicorn (27.0.1 read and run; >= 23 for its Worker, >= 24 for the native asgi worker)
runs the app in worker processes under an arbiter. The arbiter stops a worker in
several ways, and kills it if it takes too long (``gunicorn/arbiter.py``):

- **stop** (arbiter SIGTERM): it closes its own listening sockets, sends SIGTERM to every
  worker, waits ``graceful_timeout`` (30 s) and then SIGKILLs what is left;
- **quick stop** (arbiter SIGINT/SIGQUIT): the same with SIGQUIT to the workers; a
  SIGINT/SIGQUIT during a stop gives the workers 2 s more, then SIGKILL;
- **reload** (HUP) and fewer workers (TTOU): new workers start (or the rest serve on),
  and the old ones get SIGTERM while the arbiter keeps its listening sockets;
- **recycling**: a worker ends its main loop by itself after ``max_requests`` (or whenever
  its ``alive`` turns False); no signal;
- **WORKER TIMEOUT**: a worker whose heartbeat (``Worker.notify()``) is older than
  ``timeout`` gets SIGABRT, then SIGKILL. The heartbeat stops with the main loop.

What this module reads of gunicorn: the ``gunicorn.workers.base.Worker`` object (found
in the frames of the main thread: its ``run()`` runs the event loop), its ``cfg``
(``graceful_timeout``, ``timeout``), ``max_requests``, ``alive``, ``notify()``, ``ppid``
and ``sockets``; and, on Linux, ``/proc/<arbiter>/fd`` to tell a stop (the arbiter has
closed its listening sockets) from a reload or TTOU (it still holds them).

``GunicornStops`` (mixed into each worker class's adapter) does, in every worker:

- at boot: reads the window; if our budget does not fit in ``graceful_timeout`` less
  ``EXIT_MARGIN``, logs one warning naming both numbers and shortens the phases
  (``Lifecycle.limit_budget``) so that the hooks, LIFESPAN exits and the last report
  happen before the SIGKILL;
- on SIGTERM when the arbiter stops: the generic behaviour (drain from the signal,
  503 from CLOSING on, the server released at STOPPED);
- on SIGTERM while the arbiter still listens (reload, TTOU, a SIGTERM to this worker
  alone), and when the worker stops by itself (recycling; or any signal with
  ``HANDLE_SIGNALS`` off): this worker stops accepting at once, so its siblings (or the
  new workers) take the new connections instead of a 503 here; ``SETTLE`` s later (the
  connections it had just accepted get their request served) our shutdown begins
  without DRAINING (trigger ``"recycle"`` when there was no signal), and with it the
  server's own stop;
- on SIGQUIT, and SIGINT (what gunicorn's workers take as a quick stop): skips to
  CANCELLING (a later one, a second or more after, to REPORTING); hooks, LIFESPAN exits
  and the report still run, bounded. After a SIGTERM, when the arbiter leaves only
  ``QUICK_WINDOW`` s, CANCELLING ends early enough for the hooks' bounds to fit. A
  repeated SIGTERM changes nothing: the arbiter sends one each time round its loop to a
  worker it has too many of (TTOU, a reload);
- from the start of our shutdown to the process's end: the heartbeat, every
  ``HEARTBEAT_INTERVAL`` (or half the worker's own notify interval), so a request
  longer than ``timeout`` gets its grace rather than a SIGABRT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._core.phases import Phase
from ._compat import Version, installed_version, version_problem
from .base import SAME_SIGNAL_WINDOW, ServerAdapter

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: The gunicorn versions whose Worker this module was read against (27.0.1 tested); a
#: newer one is used with a warning when its internals are where these have them.
MIN_VERSION, BELOW_VERSION = (27,), (28,)
#: What a worker needs after our STOPPED to be gone (the server's own stop, and the
#: teardown guard's wait for tasks that ignore the last cancel): kept out of the budget.
EXIT_MARGIN = 1.0
#: Seconds between two heartbeats while our shutdown runs (at most).
HEARTBEAT_INTERVAL = 1.0
#: When other workers serve on, how long this one still serves the connections it
#: accepted just before it stopped accepting, before our CLOSING answers 503.
SETTLE = 0.2
#: How often a serving worker looks whether gunicorn stopped it without a signal.
WATCH_INTERVAL = 0.1
#: The signals a gunicorn worker takes as a quick stop (the arbiter sends SIGQUIT for its
#: own SIGINT/SIGQUIT; a terminal's Ctrl-C also reaches the workers as SIGINT).
QUICK_SIGNALS = (signal.SIGQUIT, signal.SIGINT)
#: What the arbiter gives its workers after a SIGINT/SIGQUIT during its stop, and the
#: least of it CANCELLING keeps (cancelled work gets a moment to unwind).
QUICK_WINDOW, MIN_CANCELLING = 2.0, 0.5
#: The trigger of a shutdown that gunicorn began without a signal (max_requests, ...).
RECYCLE = "recycle"


def find_worker(modules: dict[str, ModuleType]) -> Any:
    """The ``gunicorn.workers.base.Worker`` whose ``run()`` runs this (main) thread, or None."""
    base = modules.get("gunicorn.workers.base")
    worker_class = getattr(base, "Worker", None)
    if worker_class is None:
        return None
    for frame in _main_thread_frames():
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, worker_class):
            return candidate
    return None


def _main_thread_frames() -> Iterator[FrameType]:
    if threading.current_thread() is threading.main_thread():
        frame: FrameType | None = sys._getframe(1)
    else:
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        yield frame
        frame = frame.f_back


def gunicorn_problem(worker: Any, version: Version | None, minimum: Version) -> str | None:
    """Why the shared part cannot work with this gunicorn worker, or None."""
    if worker is None:
        return "no gunicorn Worker runs this process's main thread"
    problem = version_problem("gunicorn", version, minimum)
    if problem is not None:
        return problem
    cfg = getattr(worker, "cfg", None)
    if not (
        isinstance(getattr(cfg, "graceful_timeout", None), int | float)
        and isinstance(getattr(cfg, "timeout", None), int | float)
        and isinstance(getattr(worker, "max_requests", None), int)
        and isinstance(getattr(worker, "alive", None), bool)
        and isinstance(getattr(worker, "ppid", None), int)
        and callable(getattr(worker, "notify", None))
        and isinstance(getattr(worker, "sockets", None), list)
    ):
        return (
            "its Worker has no cfg.graceful_timeout / timeout, max_requests, alive, ppid, "
            "notify() or sockets"
        )
    return None


def gunicorn_version() -> Version | None:
    return installed_version("gunicorn")


def warn_if_untested(version: Version | None) -> None:
    """A gunicorn newer than the one read: engage anyway (its internals were checked)."""
    untested = version_problem("gunicorn", version, MIN_VERSION, BELOW_VERSION)
    if untested is not None:
        logger.warning("%s; its internals match, so the adapter engages anyway", untested)


def parent_listens(worker: Any) -> bool:
    """Does the arbiter still hold one of this worker's listening sockets? Yes during a
    reload or TTOU (other workers serve on); no once it stops (it closes them first).
    False where it cannot be seen (no /proc): the behaviour of a full stop."""
    inodes = set()
    for sock in worker.sockets:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            inodes.add(f"socket:[{os.fstat(sock.fileno()).st_ino}]")
    folder = f"/proc/{os.getppid()}/fd"
    try:
        fds = os.listdir(folder)
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(os.path.join(folder, fd)) in inodes:
                return True
    return False


def _seconds(value: float) -> str:
    return f"{value:g} s"


class GunicornStops(ServerAdapter):
    """Gunicorn's ways of stopping a worker, mixed in front of a worker class's adapter.

    The worker class's adapter provides ``_stopping_by_itself()`` (gunicorn or the server
    ended the main loop without a signal of ours), ``_stop_accepting()`` (close the
    listening servers), ``_stop_now()`` (let the server stop in its own way at once) and
    ``_quick_release()`` (what the server does for a quick stop, once ours is STOPPED).
    """

    #: The gunicorn Worker of this process (None: not engaged; the base behaviour).
    worker: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._quick: int | None = None  # the quick-stop signal seen, if any
        self._quick_at = 0.0
        self._siblings_serve = False
        self._heartbeat: asyncio.Task[None] | None = None

    def whole_server_stops(self) -> bool:
        """A signal stops the server unless the arbiter keeps listening (a reload, too many
        workers) or this worker recycles: its siblings serve on."""
        return super().whole_server_stops() and not self._siblings_serve

    # -- boot -------------------------------------------------------------------------

    def engage_gunicorn(self, lifecycle: Lifecycle, worker: Any) -> None:
        """The shared part, once the worker class's adapter has engaged."""
        self.worker = worker
        warn_if_untested(gunicorn_version())
        self._fit_budget(lifecycle, worker)
        loop = lifecycle.loop
        if loop is None:
            return
        if self.chain is not None:
            # gunicorn's own SIGQUIT handler; called at STOPPED (_quick_release).
            loop.add_signal_handler(signal.SIGQUIT, self.on_signal, signal.SIGQUIT)
        self.keep(loop.create_task(self._watch(), name="django_graceful gunicorn watch"))

    def _fit_budget(self, lifecycle: Lifecycle, worker: Any) -> None:
        graceful = float(worker.cfg.graceful_timeout)
        budget = lifecycle.budget()
        logger.info(
            "gunicorn worker pid %d: graceful_timeout %s, timeout %s, max_requests %s; "
            "shutdown budget %s",
            os.getpid(),
            _seconds(graceful),
            _seconds(worker.cfg.timeout) if worker.cfg.timeout else "off",
            worker.max_requests if worker.max_requests < sys.maxsize else "off",
            _seconds(budget),
        )
        room = graceful - EXIT_MARGIN
        if budget > room:
            lifecycle.limit_budget(
                max(room, 0.0),
                f"gunicorn's graceful_timeout ({_seconds(graceful)}) less {_seconds(EXIT_MARGIN)} "
                "for the worker to exit",
            )

    # -- stops ------------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        lifecycle = self.lifecycle
        if self.worker is None or lifecycle is None:
            super().on_signal(signum)
            return
        name = signal.Signals(signum).name
        now = time.monotonic()
        quick = signum in QUICK_SIGNALS
        if self._first_signal is None and not lifecycle.shutting_down:
            self._first_signal, self._first_signal_at = signum, now
            # A quick stop holds the server until STOPPED even when other workers serve
            # on: its own quick stop would skip our hooks (a Ctrl-C reaches the workers
            # before the arbiter closes its sockets).
            self._siblings_serve = not quick and parent_listens(self.worker)
            logger.info(
                "%s received: %s%s",
                name,
                "quick stop, skipping to CANCELLING" if quick else "draining",
                "; gunicorn's other workers take the new connections"
                if self._siblings_serve
                else "",
            )
            if quick:
                self._quick, self._quick_at = signum, now
            if self._siblings_serve:
                self._hand_over(lifecycle, name)
                return
            lifecycle.begin_shutdown(name, drain=not quick)
            if quick:
                lifecycle.escalate()
            self._begun(lifecycle)
            return
        if self._first_signal is None:
            # During a recycle: the server is stopping already.
            self._first_signal, self._first_signal_at = signum, now
        if not quick:
            # The arbiter sends SIGTERM again to a worker it has too many of (TTOU, after a
            # reload) each time round its loop: not an operator's second signal.
            return
        if self._quick is None:
            # A quick stop during a graceful one (the arbiter's SIGQUIT for its own SIGINT or
            # SIGQUIT during a stop, or after a process group's Ctrl-C): skip to CANCELLING.
            self._quick, self._quick_at = signum, now
            logger.info("%s received: quick stop, skipping to CANCELLING", name)
            lifecycle.escalate()
            self._fit_quick_window(lifecycle)
        elif now - self._quick_at >= SAME_SIGNAL_WINDOW:
            self._quick_at = now
            lifecycle.escalate()

    def _fit_quick_window(self, lifecycle: Lifecycle) -> None:
        """A quick stop during the arbiter's stop leaves ``QUICK_WINDOW`` s before the
        SIGKILL: end CANCELLING early enough for the hooks (by their bounds) to run."""
        s = lifecycle.settings
        hooks = lifecycle.budget() - s.DRAIN_DELAY - s.GRACE_PERIOD - s.CANCEL_TIMEOUT
        cancelling = max(QUICK_WINDOW - EXIT_MARGIN - hooks, MIN_CANCELLING)
        if cancelling < s.CANCEL_TIMEOUT and lifecycle.loop is not None:
            lifecycle.loop.call_later(cancelling, self._end_cancelling, lifecycle)

    def _end_cancelling(self, lifecycle: Lifecycle) -> None:
        if lifecycle.phase == Phase.CANCELLING:
            lifecycle.escalate()

    def _hand_over(self, lifecycle: Lifecycle, trigger: str) -> None:
        """Other workers serve on: stop accepting now, and begin our shutdown (without
        DRAINING) ``SETTLE`` s later, so that the connections this worker accepted just
        before still get their first request served rather than a 503."""
        self._stop_accepting()
        self._start_heartbeat(lifecycle)
        assert lifecycle.loop is not None
        lifecycle.loop.call_later(SETTLE, self._settled, lifecycle, trigger)

    def _settled(self, lifecycle: Lifecycle, trigger: str) -> None:
        if not lifecycle.shutting_down:
            lifecycle.begin_shutdown(trigger, drain=False)
        self._begun(lifecycle)

    def _begun(self, lifecycle: Lifecycle) -> None:
        """Our shutdown began: keep the heartbeat, bound the exit, and when other workers
        serve on, let the server's own stop begin now (ours runs alongside)."""
        lifecycle.arm_watchdog()
        self._start_heartbeat(lifecycle)
        if self._siblings_serve:
            self.release()

    async def _watch(self) -> None:
        """Start our shutdown when gunicorn (or the server) stops the worker by itself."""
        lifecycle = self.lifecycle
        assert lifecycle is not None
        while not lifecycle.shutting_down and self._first_signal is None:
            if self._stopping_by_itself():
                logger.info(
                    "gunicorn worker pid %d stops by itself (%s): it takes no new "
                    "connections and drains what it holds",
                    os.getpid(),
                    self._why_stopping(),
                )
                self._siblings_serve = True
                self._hand_over(lifecycle, RECYCLE)
                return
            await asyncio.sleep(WATCH_INTERVAL)

    def _why_stopping(self) -> str:
        worker = self.worker
        if worker.ppid != os.getppid():
            return "its arbiter is gone"
        nr = getattr(worker, "nr", 0)
        if isinstance(nr, int) and nr >= worker.max_requests:
            return f"max_requests {worker.max_requests} reached"
        return "its alive flag turned False"

    def _stopping_by_itself(self) -> bool:
        worker = self.worker
        return not worker.alive or worker.ppid != os.getppid()

    def _start_heartbeat(self, lifecycle: Lifecycle) -> None:
        if self._heartbeat is not None or lifecycle.loop is None:
            return
        self._heartbeat = lifecycle.loop.create_task(
            self._beat(), name="django_graceful gunicorn heartbeat"
        )
        self.keep(self._heartbeat)

    async def _beat(self) -> None:
        """``Worker.notify()`` until the process ends: the arbiter's WORKER TIMEOUT (SIGABRT)
        is for a frozen worker, not for one that drains."""
        interval = HEARTBEAT_INTERVAL
        timeout = getattr(self.worker, "timeout", 0)  # half the arbiter's timeout
        if isinstance(timeout, int | float) and timeout > 0:
            interval = min(interval, timeout / 2)
        while True:
            try:
                self.worker.notify()
            except Exception:
                logger.exception("gunicorn: the heartbeat failed")
                return
            await asyncio.sleep(interval)

    # -- release ----------------------------------------------------------------------

    def release_server(self, signum: int | None) -> None:
        if self.worker is None:
            super().release_server(signum)
            return
        if signum is not None and signum not in QUICK_SIGNALS:
            super().release_server(signum)
        if self._quick is not None:
            self._quick_release()
        self._stop_now()

    def _stop_accepting(self) -> None:
        """Close the server's listening sockets (this worker's copies of the arbiter's)."""

    def _stop_now(self) -> None:
        """The server stops at once in its own way (stop accepting, finish what it holds)."""

    def _quick_release(self) -> None:
        """What the server does on a quick stop (called once our shutdown is STOPPED)."""
