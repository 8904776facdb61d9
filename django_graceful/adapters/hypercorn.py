"""Hypercorn driver: workers drain on the parent's stop signal; hypercorn stops only at STOPPED.

Hypercorn (``hypercorn.asyncio.run``) runs the app in worker processes, also with the
default one worker. The parent catches SIGINT/SIGTERM and sets a shared
``multiprocessing.Event``; the workers install no handler (SIGTERM kills them, SIGINT is
ignored) and poll ``event.is_set()`` every 0.1 s. Once it is set a worker stops accepting,
waits ``graceful_timeout`` (3 s; forever on Python >= 3.12, hypercorn#308), cancels what is
left, and only then sends ``lifespan.shutdown``. When the first worker exits, the parent
``terminate()``s the others, and it exits 0 even when a worker failed (hypercorn#269).

In each worker this driver:

- shadows ``event.is_set`` so that hypercorn sees the event only when our shutdown is
  STOPPED, and watches the real event itself (the first ``set()`` starts draining, a later
  one escalates);
- handles SIGTERM sent to the worker itself (a process-group kill, or the parent's
  ``terminate()`` after another worker exited): it starts our shutdown or, if that already
  runs, changes nothing;
- at STOPPED shortens ``graceful_timeout`` (nothing of ours is in flight any more) and
  releases hypercorn; it tells the lifecycle that hypercorn waits for hung work for ever
  (``holds_hung_work``), so that a task still running then ends the process;
- on a startup failure, says that the parent will exit 0 all the same.

With ``--workers 0`` (one process) it replaces hypercorn's loop signal handlers and sets
hypercorn's own shutdown event at STOPPED.

What it reads of hypercorn that hypercorn does not document is all in the probe below
(``Hypercorn`` and ``ParentEvent``), checked against 0.18.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .._core.driver import Control, Driver, Ending
from .._core.process import in_main_thread
from ._versions import fall_back, installed_version, shown, version_problem

if TYPE_CHECKING:
    from .._core.registry import Tracked

logger = logging.getLogger("django_graceful")

#: The versions whose internals the probe was read against and tested with.
MIN_VERSION, BELOW_VERSION = (0, 18), (0, 19)
#: How often a worker looks at the parent's shutdown event (hypercorn itself: 0.1 s).
POLL_INTERVAL = 0.05
#: hypercorn's ``graceful_timeout`` once we release it: only for connections that reached
#: us after STOPPED (they get a 503 at once); our own grace has already been given.
RELEASE_GRACE = 1.0
#: Longest wait for the event's lock (a worker that died holding it must not freeze us).
LOCK_TIMEOUT = 0.5


def running(modules: dict[str, ModuleType]) -> bool:
    """Under hypercorn: its asyncio worker is running this loop, or its CLI started us."""
    run_module = modules.get("hypercorn.asyncio.run")
    if run_module is None:
        return False
    with contextlib.suppress(RuntimeError):
        if Hypercorn.worker_frame(run_module, asyncio.get_running_loop()) is not None:
            return True
    # The CLI's argv reaches spawned workers too: `.../bin/hypercorn` or `-m hypercorn`.
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return argv0.name == "hypercorn" or argv0.parent.name == "hypercorn"


@dataclass
class Hypercorn:
    """The probe: every private thing this package reads or changes of a hypercorn worker.

    - the frame of ``hypercorn.asyncio.run.worker_serve``, found by its code object in
      the loop's tasks, and its locals ``config``, ``shutdown_trigger`` (a ``partial`` of
      ``hypercorn.utils.check_multiprocess_shutdown_event`` on the parent's
      ``multiprocessing.Event``) and ``signal_event`` (``--workers 0``);
    - ``config.graceful_timeout`` (written at STOPPED);
    - the parent's event: ``is_set`` shadowed by an instance attribute, and its
      ``Condition``'s ``_lock``, ``_sleeping_count`` and ``_woken_count`` semaphores
      (``_semlock._get_value()``), to see each ``set()`` (``ParentEvent``).
    """

    config: Any
    #: The parent's ``multiprocessing.Event`` (worker processes; the default).
    parent_event: Any = None
    #: hypercorn's own ``asyncio.Event`` set by its loop signal handlers (``--workers 0``).
    signal_event: asyncio.Event | None = None

    @staticmethod
    def worker_frame(run_module: ModuleType, loop: asyncio.AbstractEventLoop) -> FrameType | None:
        """The frame of ``worker_serve`` awaited somewhere in this loop's tasks."""
        code = getattr(getattr(run_module, "worker_serve", None), "__code__", None)
        if code is None:
            return None
        for task in asyncio.all_tasks(loop):
            awaited: Any = task.get_coro()
            while awaited is not None:
                if getattr(awaited, "cr_code", None) is code:
                    return awaited.cr_frame
                awaited = getattr(awaited, "cr_await", None)
        return None

    @staticmethod
    def find(loop: asyncio.AbstractEventLoop) -> Hypercorn | None:
        """hypercorn's config and shutdown trigger, or None if they are not where 0.18
        has them."""
        run_module = sys.modules.get("hypercorn.asyncio.run")
        config_module = sys.modules.get("hypercorn.config")
        utils = sys.modules.get("hypercorn.utils")
        if run_module is None or config_module is None or utils is None:
            return None
        frame = Hypercorn.worker_frame(run_module, loop)
        if frame is None:
            return None
        local = frame.f_locals
        config = local.get("config")
        trigger = local.get("shutdown_trigger")
        if not isinstance(config, config_module.Config) or not hasattr(config, "graceful_timeout"):
            return None
        found = Hypercorn(config)
        check = getattr(utils, "check_multiprocess_shutdown_event", None)
        if isinstance(trigger, functools.partial) and trigger.func is check and trigger.args:
            if ParentEvent.usable(trigger.args[0]):
                found.parent_event = trigger.args[0]
        signal_event = local.get("signal_event")
        if isinstance(signal_event, asyncio.Event) and trigger == signal_event.wait:
            found.signal_event = signal_event
        return found

    def shorten_grace(self, seconds: float) -> None:
        self.config.graceful_timeout = min(float(self.config.graceful_timeout), seconds)


class ParentEvent:
    """The parent's shutdown ``multiprocessing.Event``, as one worker sees it.

    ``hold()`` makes hypercorn's poll see it unset until ``released``. ``is_set()`` reads the
    real event. Each ``set()`` by the parent (one per SIGINT/SIGTERM it receives) is seen
    through the event's Condition: ``watch_sets()`` leaves a waiter that has already timed
    out; the next ``notify_all()`` inside ``set()`` removes it without waiting for anyone
    (so the parent never waits on us, even if this process dies), and
    ``set_since_watch()`` notices that it was removed.
    """

    def __init__(self, event: Any) -> None:
        self._event = event
        self._real_is_set = event.is_set
        condition = getattr(event, "_cond", None)
        self._lock = getattr(condition, "_lock", None)
        self._sleeping = getattr(condition, "_sleeping_count", None)
        self._woken = getattr(condition, "_woken_count", None)
        self._seen: int | None = None
        self.released = False

    @staticmethod
    def usable(event: Any) -> bool:
        return callable(getattr(event, "is_set", None))

    def hold(self) -> None:
        self._event.is_set = self._seen_by_hypercorn  # an instance attribute shadows the method

    def unhold(self) -> None:
        """hypercorn sees the real event again."""
        with contextlib.suppress(AttributeError):
            del self._event.is_set

    def _seen_by_hypercorn(self) -> bool:
        return self.released

    def is_set(self) -> bool:
        return bool(self._real_is_set())

    def watch_sets(self) -> bool:
        """Leave a timed-out waiter for the parent's next ``set()``; False if not possible."""
        if self._lock is None or self._sleeping is None or self._woken is None:
            return False
        if not self._lock.acquire(True, LOCK_TIMEOUT):
            return False
        try:
            # In this order, and under the lock, as Condition.wait() does.
            self._sleeping.release()
            self._woken.release()
        finally:
            self._lock.release()
        try:
            self._seen = self._woken._semlock._get_value()
        except (AttributeError, NotImplementedError, OSError):  # e.g. macOS: no sem_getvalue
            self._seen = None
            return False
        return True

    def set_since_watch(self) -> bool:
        """Whether a ``set()`` removed the timed-out waiters since the last look.

        Only ``notify()`` takes from the woken count (other workers' waiters only add), and
        it takes all of it, ours included.
        """
        if self._seen is None or self._woken is None:
            return False
        value = self._woken._semlock._get_value()
        removed = value < self._seen
        self._seen = value
        return removed


def _version() -> str:
    return shown(installed_version("hypercorn"))


class HypercornDriver(Driver):
    name = "hypercorn"

    def __init__(self) -> None:
        super().__init__()
        self.hypercorn: Hypercorn | None = None
        self._parent: ParentEvent | None = None
        #: What a worker exits with when a hung task keeps hypercorn from finishing. In a
        #: worker process 0: the parent treats a non-zero exit as "stop every worker".
        self._forced_exit_code = 1

    # -- startup ----------------------------------------------------------------------

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        self.control = control
        loop = control.loop
        found = Hypercorn.find(loop)
        if found is None:
            fall_back(
                "hypercorn",
                f"hypercorn {_version()}: its asyncio worker (worker_serve in "
                "hypercorn.asyncio.run) was not found",
                "hypercorn may cut requests short (graceful_timeout) or wait for them "
                "forever (Python >= 3.12)",
            )
            super().attach(control, handle_signals=handle_signals)
            return
        untested = version_problem(
            "hypercorn", installed_version("hypercorn"), MIN_VERSION, BELOW_VERSION
        )
        if untested is not None:
            logger.warning("%s; its internals match, so the driver engages anyway", untested)
        self.hypercorn = found
        self.holds_hung_work = True
        if not handle_signals:
            return
        if found.parent_event is not None and in_main_thread():
            self._attach_worker_process(loop, found.parent_event)
        elif found.signal_event is not None and in_main_thread():
            self._attach_single_process(loop)
        else:
            # hypercorn.asyncio.serve() embedded with the caller's own shutdown_trigger.
            self.chain_signals(loop)

    def _attach_worker_process(self, loop: asyncio.AbstractEventLoop, event: Any) -> None:
        parent = ParentEvent(event)
        parent.hold()
        self._parent = parent
        self._forced_exit_code = 0
        # SIG_DFL in a worker: a process-group SIGTERM, or the parent's terminate() after
        # another worker exited, would otherwise kill in-flight requests at once.
        signal.signal(
            signal.SIGTERM,
            lambda signum, frame: loop.call_soon_threadsafe(self._sigterm_to_worker),
        )
        self.keep(loop.create_task(self._watch_parent(parent)))

    def _attach_single_process(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                # Replaces hypercorn's own handler, which would stop it at once.
                loop.add_signal_handler(signum, self.signalled, signum)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            logger.warning(
                "hypercorn: cannot handle signals in its loop (%s); generic chaining", exc
            )
            self.chain_signals(loop)

    def forced_ending(self, signum: int | None) -> Ending | None:
        return Ending(self._forced_exit_code)

    # -- signals ----------------------------------------------------------------------

    async def _watch_parent(self, parent: ParentEvent) -> None:
        """Turn every ``set()`` of the parent's event into a signal for our shutdown."""
        try:
            await self._follow_parent(parent)
        except Exception:
            # Never leave hypercorn deaf to its parent.
            logger.exception("hypercorn: watching the parent failed; hypercorn stops on its own")
            parent.unhold()

    async def _follow_parent(self, parent: ParentEvent) -> None:
        control = self.control
        assert control is not None
        watching = parent.watch_sets()
        if not watching:
            logger.warning(
                "hypercorn: a repeated SIGTERM/SIGINT to hypercorn's parent cannot be seen "
                "from its workers here; it will not skip to CANCELLING"
            )
        while not parent.released:
            signalled = watching and parent.set_since_watch()
            if signalled:
                watching = parent.watch_sets()
            if not control.stopping and parent.is_set():
                signalled = True
            if signalled:
                if not control.stopping:
                    logger.info(
                        "hypercorn's parent (pid %d) is stopping its workers "
                        "(it got SIGTERM, SIGINT or SIGHUP)",
                        os.getppid(),
                    )
                control.stop_requested(signal.SIGTERM)
            await asyncio.sleep(POLL_INTERVAL)

    def _sigterm_to_worker(self) -> None:
        assert self.control is not None
        if not self.control.stopping:
            self.control.stop_requested(signal.SIGTERM)
        else:
            # Escalation comes through the parent's event: this one is the parent's
            # terminate() (another worker exited) or the process group's copy of a signal.
            logger.info("SIGTERM to worker pid %d: shutdown already under way", os.getpid())

    # -- stopping ---------------------------------------------------------------------

    def finish(self, hung: list[Tracked]) -> None:
        # Read by hypercorn when its stop reaches that wait: our grace has been given, and
        # only what reached us after STOPPED (answered 503 at once) can still be in flight.
        if self.hypercorn is not None:
            self.hypercorn.shorten_grace(RELEASE_GRACE)

    def release(self, signum: int | None, *, quick: bool, hung: list[Tracked]) -> None:
        """Let hypercorn begin its own stop (its next poll, <= 0.1 s, sees the event set)."""
        if self._parent is not None:
            self._parent.released = True
        elif self.hypercorn is not None and self.hypercorn.signal_event is not None:
            self.hypercorn.signal_event.set()
        else:
            super().release(signum, quick=quick, hung=hung)

    # -- startup failure --------------------------------------------------------------

    def startup_failed(self, error: Exception) -> None:
        found = Hypercorn.find(asyncio.get_running_loop())
        if found is None or found.parent_event is None:
            return  # one process (--workers 0): hypercorn exits non-zero by itself
        logger.error(
            "startup failed in hypercorn worker pid %d; hypercorn %s stops every worker but "
            "exits 0 all the same (hypercorn#269). To exit non-zero, run one process: "
            "--workers 0 (what `manage.py serve --server hypercorn` does by default)",
            os.getpid(),
            _version(),
        )
