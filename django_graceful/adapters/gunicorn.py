"""Gunicorn, as one worker process sees its arbiter: what both worker classes' drivers share.

Gunicorn runs the app in worker processes under an arbiter. The arbiter stops a worker
in several ways, and kills it if it takes too long (``gunicorn/arbiter.py``):

- **stop** (arbiter SIGTERM): it closes its own listening sockets, sends SIGTERM to every
  worker, waits ``graceful_timeout`` (30 s) and then SIGKILLs what is left;
- **quick stop** (arbiter SIGINT/SIGQUIT): the same with SIGQUIT to the workers; a
  SIGINT/SIGQUIT during a stop gives the workers 2 s more, then SIGKILL;
- **reload** (HUP) and fewer workers (TTOU): new workers start (or the rest serve on),
  and the old ones get SIGTERM while the arbiter keeps its listening sockets; it sends a
  worker it has too many of SIGTERM again each time round its loop;
- **recycling**: a worker ends its main loop by itself after ``max_requests`` (or whenever
  its ``alive`` turns False); no signal;
- **WORKER TIMEOUT**: a worker whose heartbeat (``Worker.notify()``) is older than
  ``timeout`` gets SIGABRT, then SIGKILL. The heartbeat stops with the main loop.

So the driver tells the lifecycle: SIGQUIT and SIGINT are quick stops, a repeated SIGTERM
is the arbiter's and escalates nothing, the budget must fit in ``graceful_timeout``
(``server_limit``) and a quick stop during a stop leaves ``QUICK_WINDOW`` s; a SIGTERM
while the arbiter still listens (reload, TTOU) stops this worker *alone*, and so does
recycling, seen by watching the worker (trigger ``"recycle"``). It keeps the heartbeat
from the start of the shutdown to the process's end, every ``HEARTBEAT_INTERVAL`` (or half
the worker's own ``timeout``), so that a request longer than ``timeout`` gets its grace
rather than a SIGABRT.

What it reads of gunicorn that gunicorn does not document is all in :class:`Gunicorn`
(the probe), checked against 27.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._core.door import parent_holds_listeners
from .._core.driver import Control, Driver
from .._core.phases import Phase
from .._core.stacks import thread_frames
from ._versions import Version, installed_version, version_problem

if TYPE_CHECKING:
    from .._core.registry import Tracked

logger = logging.getLogger("django_graceful")

#: The gunicorn versions whose Worker the probe was read against (27.0.1 tested); a
#: newer one is used with a warning when its internals are where these have them.
MIN_VERSION, BELOW_VERSION = (27,), (28,)
#: django_graceful's Gunicorn server hooks: the arbiter's side of ``last_words``.
HOOKS_MODULE = "django_graceful.gunicorn_hooks"
#: Seconds between two heartbeats while our shutdown runs (at most).
HEARTBEAT_INTERVAL = 1.0
#: How often a serving worker looks whether gunicorn stopped it without a signal.
WATCH_INTERVAL = 0.1
#: The signals a gunicorn worker takes as a quick stop (the arbiter sends SIGQUIT for its
#: own SIGINT/SIGQUIT; a terminal's Ctrl-C also reaches the workers as SIGINT).
QUICK_SIGNALS = frozenset({signal.SIGQUIT, signal.SIGINT})
#: What the arbiter gives its workers after a SIGINT/SIGQUIT during its stop.
QUICK_WINDOW = 2.0
#: The trigger of a shutdown that gunicorn began without a signal (max_requests, ...).
RECYCLE = "recycle"


class Gunicorn:
    """The probe: every private thing this package reads of a gunicorn worker.

    - the ``gunicorn.workers.base.Worker`` is found in the frames of the main thread (its
      ``run()`` runs the event loop), as their local ``self``;
    - its ``cfg.graceful_timeout`` and ``cfg.timeout``, ``max_requests``, ``nr``,
      ``alive``, ``ppid`` and ``notify()`` (the heartbeat);
    - on Linux, ``/proc/<arbiter>/fd``: whether the arbiter still holds the listening
      sockets (a reload or TTOU) or has closed them (a stop);
    - ``alive`` written back to True where the arbiter stops while this worker starts
      (its SIGTERM came before our handler was in front of gunicorn's).
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    @staticmethod
    def find(modules: dict[str, ModuleType]) -> Any:
        """The ``Worker`` whose ``run()`` runs this process's main thread, or None."""
        base = modules.get("gunicorn.workers.base")
        worker_class = getattr(base, "Worker", None)
        if worker_class is None:
            return None
        for frame in _main_thread_frames():
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, worker_class):
                return candidate
        return None

    @staticmethod
    def problem(worker: Any, version: Version | None, minimum: Version) -> str | None:
        """Why the probe cannot read this gunicorn worker, or None."""
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
        ):
            return (
                "its Worker has no cfg.graceful_timeout / timeout, max_requests, alive, ppid "
                "or notify()"
            )
        return None

    @property
    def graceful_timeout(self) -> float:
        return float(self.worker.cfg.graceful_timeout)

    def describe(self) -> str:
        cfg, worker = self.worker.cfg, self.worker
        return (
            f"gunicorn worker pid {os.getpid()}: graceful_timeout {cfg.graceful_timeout:g} s, "
            f"timeout {f'{cfg.timeout:g} s' if cfg.timeout else 'off'}, max_requests "
            f"{worker.max_requests if worker.max_requests < sys.maxsize else 'off'}"
        )

    def heartbeat_interval(self) -> float:
        """Half the arbiter's timeout, at most ``HEARTBEAT_INTERVAL``."""
        timeout = getattr(self.worker, "timeout", 0)
        if isinstance(timeout, int | float) and timeout > 0:
            return min(HEARTBEAT_INTERVAL, timeout / 2)
        return HEARTBEAT_INTERVAL

    def notify(self) -> None:
        self.worker.notify()

    def stops_by_itself(self) -> str | None:
        """Why gunicorn ended (or will end) the worker's main loop without a signal, or None."""
        worker = self.worker
        if worker.ppid != os.getppid():
            return "its arbiter is gone"
        if worker.alive:
            return None
        nr = getattr(worker, "nr", 0)
        if isinstance(nr, int) and nr >= worker.max_requests:
            return f"max_requests {worker.max_requests} reached"
        return "its alive flag turned False"

    def arbiter_listens(self) -> bool:
        """Does the arbiter still hold one of this worker's listening sockets? Yes during a
        reload or TTOU (other workers serve on); no once it stops (it closes them first).
        False where it cannot be seen (no /proc): the behaviour of a full stop."""
        return self.arbiter_holds_sockets() is True

    def arbiter_stopping(self) -> bool:
        """Has the arbiter closed its listening sockets (it stops)? False where it cannot
        be seen (no /proc)."""
        return self.arbiter_holds_sockets() is False

    def take_back_stop(self) -> None:
        """Gunicorn's handler took the arbiter's SIGTERM while this worker was starting,
        before ours was in front of it, and set ``alive = False``: set it back, so that the
        worker serves until our STOPPED (then the signal reaches gunicorn again)."""
        self.worker.alive = True

    def arbiter_holds_sockets(self) -> bool | None:
        """Whether the arbiter holds one of this worker's listening sockets; None where it
        cannot be seen."""
        return parent_holds_listeners()


def _main_thread_frames() -> Iterator[FrameType]:
    if threading.current_thread() is threading.main_thread():
        frame: FrameType | None = sys._getframe(1)
    else:
        frame = thread_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        yield frame
        frame = frame.f_back


def gunicorn_version() -> Version | None:
    return installed_version("gunicorn")


class GunicornStops(Driver):
    """Gunicorn's ways of stopping a worker, mixed in front of a worker class's driver.

    The worker class's driver provides ``_stopping_by_itself()`` (the server ended the
    main loop without a signal of ours: why, or None), ``_close_listeners()``,
    ``_stop_now()`` (let the server stop in its own way at once) and ``_quick_release()``
    (what the server does for a quick stop, once ours is STOPPED).
    """

    quick_signals = QUICK_SIGNALS
    repeats_escalate = False
    #: The gunicorn worker of this process (None: not attached; the generic behaviour).
    gunicorn: Gunicorn | None = None
    _heartbeat: asyncio.Task[None] | None = None

    def attach_gunicorn(self, control: Control, gunicorn: Gunicorn) -> None:
        """The shared part, once the worker class's driver has attached."""
        self.gunicorn = gunicorn
        untested = version_problem("gunicorn", gunicorn_version(), MIN_VERSION, BELOW_VERSION)
        if untested is not None:
            logger.warning("%s; its internals match, so the driver engages anyway", untested)
        logger.info("%s", gunicorn.describe())
        if self.chain is not None:
            # gunicorn's own SIGQUIT handler; its quick stop comes at release.
            control.loop.add_signal_handler(signal.SIGQUIT, self.signalled, signal.SIGQUIT)
        if gunicorn.arbiter_stopping():
            self._stop_begun_while_starting(control, gunicorn)
        self.keep(control.loop.create_task(self._watch(), name="django_graceful gunicorn watch"))

    def _stop_begun_while_starting(self, control: Control, gunicorn: Gunicorn) -> None:
        """The arbiter stops, and this worker is only now started: its SIGTERM reached
        gunicorn's handler (which set ``alive = False``) or, in a worker forked just as the
        arbiter stopped, the arbiter's own inherited handler, which only queues it. Either
        way it is ours now: the connections queued for this worker are served (503 from
        CLOSING on) before the door shuts, rather than reset when it exits."""
        logger.info(
            "gunicorn worker pid %d started while its arbiter stops: stopping now", os.getpid()
        )
        if not gunicorn.worker.alive:
            gunicorn.take_back_stop()
        control.loop.call_soon(self.signalled, signal.SIGTERM)

    def server_limit(self) -> tuple[float, str] | None:
        if self.gunicorn is None:
            return None
        seconds = self.gunicorn.graceful_timeout
        return seconds, f"gunicorn's graceful_timeout ({seconds:g} s)"

    def quick_limit(self) -> float | None:
        return QUICK_WINDOW if self.gunicorn is not None else None

    def last_words(self, why: str, status: int) -> None:
        """The arbiter exits 0 whatever its workers exit with: a non-zero status is told
        to it through django_graceful's Gunicorn hooks (``gunicorn_hooks``), when its
        configuration has them (the module was imported before the fork)."""
        hooks = sys.modules.get(HOOKS_MODULE)
        if status and hooks is not None:
            hooks.note_ending(why, status)

    def signalled(self, signum: int) -> None:
        control, gunicorn = self.control, self.gunicorn
        if control is None or gunicorn is None:
            super().signalled(signum)
            return
        # A SIGTERM while the arbiter still listens (reload, TTOU): the others serve on.
        alone = not control.stopping and gunicorn.arbiter_listens()
        control.stop_requested(signum, alone=alone)

    async def _watch(self) -> None:
        """Report the stop when gunicorn (or the server) stops the worker by itself."""
        control = self.control
        assert control is not None
        while not control.stopping:
            why = self._stopping_by_itself()
            if why is not None:
                logger.info(
                    "gunicorn worker pid %d stops by itself (%s): it takes no new "
                    "connections and drains what it holds",
                    os.getpid(),
                    why,
                )
                control.stop_requested(None, alone=True, trigger=RECYCLE)
                return
            await asyncio.sleep(WATCH_INTERVAL)

    def _stopping_by_itself(self) -> str | None:
        assert self.gunicorn is not None
        return self.gunicorn.stops_by_itself()

    def phase_changed(self, phase: Phase) -> None:
        if phase == Phase.DRAINING:
            self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None and self.control is not None and self.gunicorn is not None:
            self._heartbeat = self.control.loop.create_task(
                self._beat(self.gunicorn), name="django_graceful gunicorn heartbeat"
            )
            self.keep(self._heartbeat)

    async def _beat(self, gunicorn: Gunicorn) -> None:
        """``Worker.notify()`` until the process ends: the arbiter's WORKER TIMEOUT (SIGABRT)
        is for a frozen worker, not for one that drains."""
        interval = gunicorn.heartbeat_interval()
        while True:
            try:
                gunicorn.notify()
            except Exception:
                logger.exception("gunicorn: the heartbeat failed")
                return
            await asyncio.sleep(interval)

    def stop_accepting(self) -> None:
        self._close_listeners()
        self._start_heartbeat()

    def release(self, signum: int | None, *, quick: bool, hung: list[Tracked]) -> None:
        if self.gunicorn is None:
            super().release(signum, quick=quick, hung=hung)
            return
        if signum is not None and signum not in QUICK_SIGNALS:
            super().release(signum, quick=quick, hung=hung)
        if quick:
            self._quick_release()
        self._stop_now()

    def _close_listeners(self) -> None:
        """Close the server's listening sockets (this worker's copies of the arbiter's)."""

    def _stop_now(self) -> None:
        """The server stops at once in its own way (stop accepting, finish what it holds)."""

    def _quick_release(self) -> None:
        """What the server does on a quick stop (called once our shutdown is STOPPED)."""
