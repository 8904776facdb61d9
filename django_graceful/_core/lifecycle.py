"""One process's lifecycle: startup, then the bounded shutdown phases (``phases.py``), in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.utils.module_loading import import_string

from .. import signals
from ..conf import GracefulSettings, get_settings
from . import stacks
from .cancellation import CancelReason
from .deadlines import bounded
from .door import Door, refuse_at_paths, reopen, shut_the_door
from .driver import Driver
from .hooks import budget, log_failure, running, send_bounded
from .phases import MIN_CANCEL, Phase
from .process import in_loop_thread
from .registry import Registry, Tracked
from .stops import ServerStops

#: The most the end of the shutdown waits for the connections queued on the listening
#: sockets to be accepted and answered (``door.shut_the_door``); within EXIT_SLACK.
DOOR_TIMEOUT = 0.3

#: Places (what, stack) the hung-work report logs one by one; the rest are counted.
MAX_HUNG_PLACES = 20

#: How often (seconds) the grace looks again at requests the server is still reading
#: before it calls the app (``Driver.reading_requests``): nothing wakes it when one ends.
READING_POLL = 0.05

#: Finds the driver for the server this process runs under (``adapters.detect``).
FindDriver = Callable[[], Driver]

logger = logging.getLogger("django_graceful")


class StartupFailed(Exception):
    """A startup hook or LIFESPAN manager raised or hung; the app must not serve."""


class Lifecycle:
    """Startup and shutdown of this process (one per process, shared by every app wrapper),
    one lifespan cycle at a time: a server runs one, a test process may run many."""

    def __init__(self, *, settings: GracefulSettings | None = None) -> None:
        """``settings``: these instead of the project's ``GRACEFUL`` (read when first needed)."""
        self._given_settings = settings
        self._phase_listeners: list[Callable[[Phase], None]] = []
        #: Told why, just before the lifecycle ends the process itself (``last_words``).
        self._last_words: list[Callable[[str], None]] = []
        self._fresh_cycle()

    def _fresh_cycle(self) -> None:
        """Everything one lifespan cycle owns, new: a server runs one cycle, a test
        process many in a row (each startup after STOPPED begins the next)."""
        self.phase = Phase.NEW
        #: CLOSING found no way left for a new client to reach this process (its listeners
        #: are Unix-domain sockets whose paths were taken away): see ``_refuse_at_paths``.
        self.closed_to_newcomers = False
        #: Wakes ``_hold`` when the last work leaves (hooked there: not on the path of
        #: every request while serving).
        self.registry = Registry()
        #: Merged state of the LIFESPAN context managers (our own reference: some
        #: servers clear the lifespan ``state`` before ``lifespan.shutdown``).
        self.state: dict[str, Any] = {}
        self.startup_error: StartupFailed | None = None
        self.trigger: str | None = None
        self.shutdown_began: float | None = None
        self.driver: Driver | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._startup_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        #: The LIFESPAN managers entered, each with its path, to exit last entered first.
        self._lifespans: list[tuple[str, contextlib.AsyncExitStack]] = []
        self._escalation = 0  # 1: skip to CANCELLING, 2: skip to REPORTING
        self._wake = asyncio.Event()  # bound to the cycle's loop at its first wait
        #: Set when the next cycle begins: this cycle's watchdog stands down.
        self._next_cycle_began = threading.Event()
        self._settings = self._given_settings
        self._cycle_listeners: list[Callable[[Phase], None]] = []
        #: Answers given without the app (503s, websocket closes) being written now.
        self.answering = 0
        #: What the server's stops mean, once a driver is attached (``stops.py``).
        self.stops: ServerStops | None = None

    @property
    def settings(self) -> GracefulSettings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @property
    def shutting_down(self) -> bool:
        return self.phase >= Phase.DRAINING

    @property
    def stale(self) -> bool:
        """This cycle's event loop has closed (a test's loop, with or without a lifespan
        shutdown): the cycle is over whatever its phase, and the next startup, of a
        lifespan or of a first request, begins a fresh one."""
        return self.loop is not None and self.loop.is_closed()

    def on_last_resort(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(why)`` just before the lifecycle ends the process itself (the
        watchdog, a server that would never exit): from any thread, bounded by the
        listener itself."""
        self._last_words.append(listener)

    def last_words(self, why: str) -> None:
        """The process is about to be ended (``why``): tell the ``on_last_resort``
        listeners."""
        for listener in list(self._last_words):
            try:
                listener(why)
            except Exception:
                logger.exception("last-resort listener %r failed", listener)

    def on_phase(self, listener: Callable[[Phase], None], *, this_cycle: bool = False) -> None:
        """Call ``listener(phase)`` at every phase change (in the loop thread): of every
        cycle, or (``this_cycle``) of the current one only."""
        (self._cycle_listeners if this_cycle else self._phase_listeners).append(listener)

    # -- startup ----------------------------------------------------------------------

    async def startup(
        self, app: Any, find_driver: FindDriver | None = None, *, lazy: bool = False
    ) -> None:
        """Start the cycle once; concurrent and later callers wait for the same start.

        ``find_driver`` gives the driver for the running server, asked once startup
        has completed (or failed: the driver may make the failure visible). Without
        one, nothing but the lifespan protocol stops this lifecycle. ``lazy``: the server
        sent no lifespan and serves already (the first request starts the cycle): the
        driver is attached before the hooks run, so that a stop signal during the startup
        is ours too, and the shutdown follows the startup.
        Raises :class:`StartupFailed` (every time) if it failed, and while a shutdown is
        under way. Once the cycle is STOPPED (or its loop closed: ``stale``), a startup
        begins the next cycle: hooks, LIFESPAN managers and state anew.
        """
        if self.phase == Phase.STOPPED or self.stale:
            self._next_cycle()
        elif self.phase >= Phase.DRAINING:
            raise StartupFailed(
                f"startup asked while the shutdown is under way (phase {self.phase.name}): "
                "a new cycle can start once this one is STOPPED"
            )
        if self._startup_task is None:
            self.loop = asyncio.get_running_loop()
            self._startup_task = asyncio.ensure_future(self._startup(app, find_driver, lazy))
        await asyncio.shield(self._startup_task)

    def _next_cycle(self) -> None:
        """End what is left of the last cycle, then make everything fresh."""
        if self.phase != Phase.STOPPED:
            logger.info(
                "the event loop of the last cycle closed in phase %s, without a lifespan "
                "shutdown (its shutdown hooks and LIFESPAN exits did not run): starting anew",
                self.phase.name,
            )
            self._enter(Phase.STOPPED)
        self._next_cycle_began.set()
        self._fresh_cycle()

    async def _startup(self, app: Any, find_driver: FindDriver | None, lazy: bool) -> None:
        self._enter(Phase.STARTING)
        if lazy and find_driver is not None:
            self.attach(find_driver())
        reopened = reopen()
        if reopened:
            logger.warning(
                "%d listening socket(s) came shut from a server that stopped before; "
                "opened again to new connections",
                reopened,
            )
        try:
            settings = self.settings
            for path in settings.LIFESPAN:
                await self._enter_lifespan(path, app, settings.HOOK_TIMEOUT)
            results = await send_bounded(
                signals.startup, type(self), settings.HOOK_TIMEOUT, log=False, state=self.state
            )
            for result in results:
                if not result.outcome.finished:
                    raise StartupFailed(
                        f"startup hook {result.name} did not finish within {result.timeout:g} s"
                    )
                if result.outcome.error is not None:
                    error = result.outcome.error
                    raise StartupFailed(
                        f"startup hook {result.name} raised {type(error).__name__}: {error}"
                    ) from error
        except Exception as exc:
            failure = exc if isinstance(exc, StartupFailed) else StartupFailed(f"{exc}")
            self.startup_error = failure
            cause = failure.__cause__ or exc
            logger.error(
                "startup failed: %s", failure, exc_info=cause if cause is not failure else None
            )
            await self._close_lifespan()
            self._detach_after_failed_startup()
            self._enter(Phase.STOPPED)
            if find_driver is not None:
                _tell_server_startup_failed(find_driver, failure)
            raise failure from exc
        if find_driver is not None and self.driver is None:
            self.attach(find_driver())
        self._enter(Phase.SERVING)
        logger.info(
            "django_graceful started (server: %s, pid %d, shutdown budget %g s)",
            self.driver.name if self.driver is not None else "none",
            os.getpid(),
            self.budget(),
        )

    def attach(self, driver: Driver) -> None:
        """Attach the driver of the server this process runs under (``stops.py``)."""
        assert self.loop is not None
        self.driver = driver
        self.stops = ServerStops(self, driver, self.loop, self._next_cycle_began)
        self.stops.attach(handle_signals=self.settings.HANDLE_SIGNALS)

    def _detach_after_failed_startup(self) -> None:
        """A lazy startup failed: the server serves on (answering 503), so the driver
        attached for it lets go, without handing the server a stop, unless one came (then
        STOPPED hands it over, and the server stops)."""
        if self.stops is None or self.stops.stopping:
            return
        driver, self.driver, self.stops = self.driver, None, None
        if driver is not None:
            try:
                driver.detach()
            except Exception:
                logger.exception("could not put back the signal handlers")

    async def _enter_lifespan(self, path: str, app: Any, timeout: float) -> None:
        manager = import_string(path)(app)
        stack = contextlib.AsyncExitStack()
        with running(f"LIFESPAN {path}", timeout):
            outcome = await bounded(stack.enter_async_context(manager), timeout)
        if outcome.ok:
            self._lifespans.append((path, stack))
        if not outcome.finished:
            raise StartupFailed(f"LIFESPAN {path} did not start within {timeout:g} s")
        if outcome.error is not None:
            error = outcome.error
            raise StartupFailed(
                f"LIFESPAN {path} raised {type(error).__name__}: {error}"
            ) from error
        if outcome.result is not None:
            if not isinstance(outcome.result, dict):
                raise StartupFailed(
                    f"LIFESPAN {path} yielded {type(outcome.result).__name__}; "
                    "it must yield a dict or None"
                )
            self.state.update(outcome.result)

    # -- shutdown ---------------------------------------------------------------------

    def begin_shutdown(self, trigger: str, *, drain: bool = True) -> None:
        """Start the shutdown sequence (in the loop thread); a repeat call escalates.

        ``drain=False`` skips DRAINING, for a server that already stopped accepting.
        """
        if self._shutdown_task is not None:
            self.escalate()
            return
        self.trigger = trigger
        self.shutdown_began = time.monotonic()
        loop = self.loop or asyncio.get_running_loop()
        self._shutdown_task = loop.create_task(self._shutdown(trigger, drain))

    def escalate(self) -> None:
        """Skip ahead: first to CANCELLING, then to REPORTING."""
        self._escalation = min(self._escalation + 1, 2)
        logger.warning(
            "shutdown escalated: skipping to %s",
            "CANCELLING" if self._escalation == 1 else "REPORTING",
        )
        self._wake_up()

    async def shutdown(self, trigger: str = "lifespan") -> None:
        """Run (or join) the shutdown sequence and wait until it is STOPPED."""
        if self._startup_task is not None and not self._startup_task.done():
            # Asked during the startup (the lazy one, of a first request): the startup
            # ends first (its hooks are bounded), so that it cannot go on to SERVING.
            with contextlib.suppress(StartupFailed):
                await asyncio.shield(self._startup_task)
        if self.phase < Phase.SERVING:
            self._enter(Phase.STOPPED)
            return
        if self._shutdown_task is None:
            # The server stopped accepting on its own before telling us: nothing to drain.
            self.begin_shutdown(trigger, drain=False)
        assert self._shutdown_task is not None
        await asyncio.shield(self._shutdown_task)

    def budget(self) -> float:
        """The most the shutdown sequence may take, from its first signal to STOPPED."""
        return sum(self.budget_parts().values())

    def budget_parts(self) -> dict[str, float]:
        """The budget's parts, in their order: the three phases' settings, then the bounds
        of the ``shutdown_started`` receivers, the LIFESPAN managers' exits and the
        ``shutdown`` receivers (each hook's ``timeout``, or ``HOOK_TIMEOUT``)."""
        s = self.settings
        return {
            "DRAIN_DELAY": s.DRAIN_DELAY,
            "GRACE_PERIOD": s.GRACE_PERIOD,
            "CANCEL_TIMEOUT": s.CANCEL_TIMEOUT,
            "shutdown_started": budget(signals.shutdown_started, type(self), s.HOOK_TIMEOUT),
            "LIFESPAN": s.HOOK_TIMEOUT * len(s.LIFESPAN),
            "shutdown": budget(signals.shutdown, type(self), s.HOOK_TIMEOUT),
        }

    def limit_budget(self, seconds: float, why: str) -> bool:
        """Shorten the phases so that the whole shutdown fits in ``seconds``: for a server
        that kills the process after a timeout of its own (Gunicorn's graceful_timeout).

        DRAIN_DELAY goes first, then GRACE_PERIOD, then CANCEL_TIMEOUT down to
        ``MIN_CANCEL`` (cancelled work gets a moment to unwind), then the rest of it; the
        hooks keep their own bounds. Call it before the shutdown begins. Logs one warning
        naming both numbers; returns False if even that does not make it fit.
        """
        before = self.budget()
        excess = before - seconds
        if excess <= 0:
            return True
        s = self.settings
        drain, grace, cancel = s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT
        hooks = before - drain - grace - cancel

        def cut(value: float, floor: float = 0.0) -> float:
            nonlocal excess
            taken = min(max(value - floor, 0.0), excess)
            excess -= taken
            return value - taken

        drain = cut(drain)
        grace = cut(grace)
        cancel = cut(cut(cancel, min(cancel, MIN_CANCEL)))
        self._settings = dataclasses.replace(
            s, DRAIN_DELAY=drain, GRACE_PERIOD=grace, CANCEL_TIMEOUT=cancel
        )
        fits = excess <= 1e-9
        logger.warning(
            "the shutdown budget (%.1f s) does not fit in %s (%.1f s): phases shortened to "
            "drain %gs, grace %gs, cancel %gs%s",
            before,
            why,
            seconds,
            drain,
            grace,
            cancel,
            "" if fits else f"; the hooks alone take {hooks:.1f} s: it still does not fit",
        )
        return fits

    async def _shutdown(self, trigger: str, drain: bool) -> None:
        """The phases (``phases.py``), top to bottom; every wait has its deadline."""
        if self._startup_task is not None and not self._startup_task.done():
            # A stop during a lazy startup: the startup ends first (its hooks are bounded).
            logger.info("%s received during the startup: the shutdown follows it", trigger)
            with contextlib.suppress(StartupFailed):
                await asyncio.shield(self._startup_task)
        if self.phase != Phase.SERVING:
            return  # the startup failed: STOPPED already
        s = self.settings
        logger.info(
            "shutdown (%s): drain %gs, grace %gs, cancel %gs; %d in flight",
            trigger,
            s.DRAIN_DELAY if drain else 0,
            s.GRACE_PERIOD,
            s.CANCEL_TIMEOUT,
            len(self.registry),
        )
        started_hooks = asyncio.ensure_future(
            send_bounded(signals.shutdown_started, type(self), s.HOOK_TIMEOUT, trigger=trigger)
        )

        self._enter(Phase.DRAINING)
        if drain:
            await self._hold(s.DRAIN_DELAY, until_idle=False, unless_escalated=1)

        self._enter(Phase.CLOSING)
        self._tell_closing()
        grace_ends = time.monotonic() + s.GRACE_PERIOD
        door_first = self._door_shut_at_the_stop()
        if door_first:
            # The door shut at the stop (the next process takes the port): what the kernel
            # queued before it is accepted now, and served as work in flight.
            await self._shut_the_door()
        else:
            await self._refuse_at_paths()
        await self._hold(grace_ends - time.monotonic(), until_idle=True, unless_escalated=1)

        self._enter(Phase.CANCELLING)
        await self._cancel_remaining(s.CANCEL_TIMEOUT)

        self._enter(Phase.REPORTING)
        hung = self._report_hung()
        await started_hooks
        await send_bounded(signals.shutdown, type(self), s.HOOK_TIMEOUT, hung=hung)
        await self._close_lifespan()
        if not door_first:
            await self._shut_the_door()

        self._enter(Phase.STOPPED)
        logger.info(
            "shutdown complete in %.2f s (%d hung)",
            time.monotonic() - (self.shutdown_began or time.monotonic()),
            len(hung),
        )

    def _door_shut_at_the_stop(self) -> bool:
        """Whether the door was shut when the stop began (``ServerStops``: a reload whose
        next process listens on a socket of its own)."""
        stops = self.stops
        return stops is not None and stops.handing_over and stops.whole_server_stops()

    async def _refuse_at_paths(self) -> None:
        """When the whole server stops: new clients of its Unix-domain sockets are refused
        at connect from CLOSING on (a balancer tries its next upstream, a POST included),
        rather than answered 503 one by one. Where no new client can reach the process any
        more (``closed_to_newcomers``), what still reaches the app (queued connections, one
        more request on each kept-alive one) is served as work in flight, not refused:
        a balancer does not resend a POST it has sent."""
        if self.stops is None or not self.stops.whole_server_stops():
            return
        paths, self.closed_to_newcomers = await refuse_at_paths()
        if paths:
            logger.info("new connections refused at %s", ", ".join(paths))

    async def _shut_the_door(self) -> None:
        """When the whole server stops: no new connection from now on, and those the kernel
        already queued are accepted and answered before the server closes its listening
        sockets (which would reset them)."""
        if self.stops is None or not self.stops.whole_server_stops():
            return
        door, queued = await shut_the_door(DOOR_TIMEOUT, busy=lambda: self.answering > 0)
        if door is Door.QUEUED:
            logger.warning(
                "listening sockets shut to new connections; %d accepted by the kernel were "
                "still waiting after %g s and will be reset",
                queued,
                DOOR_TIMEOUT,
            )
        else:
            logger.info("listening sockets: %s", door.value)

    async def _hold(self, seconds: float, *, until_idle: bool, unless_escalated: int) -> None:
        """Wait ``seconds``; return early when idle (if asked) or escalated past this phase.
        Idle: no work in flight, and no request the server is still reading before it calls
        the app (``Driver.reading_requests``, looked at every ``READING_POLL`` s)."""
        deadline = time.monotonic() + seconds
        self.registry.on_empty = self._wake_up
        while self._escalation < unless_escalated:
            idle = until_idle and not self.registry
            reading = idle and self._reading_requests()
            if idle and not reading:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), min(remaining, READING_POLL) if reading else remaining
                )

    def _reading_requests(self) -> int:
        driver = self.driver
        if driver is None:
            return 0
        try:
            return driver.reading_requests()
        except Exception:
            logger.debug("could not count the requests %s is reading", driver.name, exc_info=True)
            return 0

    def read_before_closing(self, http: bool = True) -> bool:
        """Whether the request now reaching the app (in its task) is served as work in
        flight during CLOSING, not refused: one the server was already reading when
        CLOSING began (``Driver.read_before_closing``), any where this process hands its
        port over to the next one (a development server's reload: the connection was
        accepted before this process stopped accepting, and only it can answer), and an
        HTTP request where no new client can reach this process (``closed_to_newcomers``:
        it came on a connection queued or kept alive before; a websocket would outlive
        the grace)."""
        driver = self.driver
        if self.phase != Phase.CLOSING or driver is None:
            return False
        if self.stops is not None and self.stops.handing_over:
            return True
        if http and self.closed_to_newcomers:
            return True
        try:
            return driver.read_before_closing()
        except Exception:
            logger.debug("could not ask %s about a late request", driver.name, exc_info=True)
            return False

    async def _cancel_remaining(self, timeout: float) -> None:
        """Cancel what is left with reason SHUTDOWN; re-cancel what swallows it."""
        if self._escalation >= 2 or not self.registry:
            return
        interval = max(0.05, min(0.5, timeout / 4))
        deadline = time.monotonic() + timeout
        for item in self.registry:
            item.cancel(CancelReason.SHUTDOWN)
        while self.registry and self._escalation < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._hold(min(interval, remaining), until_idle=True, unless_escalated=2)
            for item in self.registry:
                item.cancel(CancelReason.SHUTDOWN)

    def _tell_closing(self) -> None:
        """Tell the work that can wind down by itself to do so now."""
        for item in self.registry:
            tell = item.on_closing
            if tell is None and item.response is not None:
                tell = item.response.closing  # a request: an endless stream is ended
            if tell is not None:
                try:
                    tell()
                except Exception:
                    logger.exception("could not tell %s to stop", item.what)

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback`` in the loop thread (from any thread); at once if no loop runs."""
        loop = self.loop
        if loop is None or loop.is_closed():
            callback(*args)
        elif in_loop_thread(loop):
            callback(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    def _report_hung(self) -> list[Tracked]:
        """Log what still runs, with its stack: one warning per place (so a thousand
        requests hung in one view make one warning, not a thousand)."""
        hung = list(self.registry)
        if not hung and not self.registry.lingering():
            return hung
        frames_by_thread = stacks.thread_frames()
        sync_calls = stacks.sync_calls(frames_by_thread)
        lingering = self.registry.lingering_threads(sync_calls)
        thread_only = {id(item) for item in lingering}
        # (kind of work, its request over?, stack) -> the items hung there
        places: dict[tuple[str, bool, str], list[Tracked]] = {}
        for item in hung + lingering:
            stack = _stack_of(item, frames_by_thread, sync_calls)
            key = (str(item.kind), id(item) in thread_only, stack)
            places.setdefault(key, []).append(item)
        for n, ((_, request_over, stack), items) in enumerate(places.items()):
            if n == MAX_HUNG_PLACES:
                rest = sum(len(items) for items in list(places.values())[n:])
                logger.warning(
                    "hung at shutdown: %d more in %d other places", rest, len(places) - n
                )
                break
            logger.warning(
                "hung at shutdown: %s%s%s\n%s",
                items[0].describe(),
                ", its request over but its thread still running" if request_over else "",
                f" (and {len(items) - 1} more like it)" if len(items) > 1 else "",
                stack,
            )
        return hung + lingering

    async def _close_lifespan(self) -> None:
        """Exit the LIFESPAN managers (last entered first), each within HOOK_TIMEOUT; one
        that raises or hangs is named, and the others still exit."""
        timeout = self.settings.HOOK_TIMEOUT
        while self._lifespans:
            path, stack = self._lifespans.pop()
            with running(f"LIFESPAN {path} (on exit)", timeout):
                outcome = await bounded(stack.aclose(), timeout)
            log_failure(outcome, f"LIFESPAN {path} (on exit)", timeout, "moving on")

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        logger.debug("phase %s", phase.name)
        driver = self.driver
        listeners = [*self._phase_listeners, *self._cycle_listeners]
        for listener in listeners + ([driver.phase_changed] if driver is not None else []):
            try:
                listener(phase)
            except Exception:
                logger.exception("phase listener %r failed", listener)
        if phase == Phase.STOPPED and driver is not None and self.stops is not None:
            try:
                self.stops.hand_over()
            except Exception:
                logger.exception("could not hand the stop to the server (%s)", driver.name)
            try:
                driver.detach()
            except Exception:
                logger.exception("could not put back the signal handlers")

    def _wake_up(self) -> None:
        self._wake.set()


def _tell_server_startup_failed(find_driver: FindDriver, failure: StartupFailed) -> None:
    """Let the server's driver make the failure visible (e.g. in the exit status)."""
    try:
        find_driver().startup_failed(failure)
    except Exception:
        logger.exception("could not tell the server that startup failed")


def _stack_of(
    item: Tracked, frames_by_thread: dict[int, FrameType], sync_calls: dict[int, int]
) -> str:
    """Where the item's work is (``Tracked.frames``), as a traceback."""
    frames, _ = item.frames(frames_by_thread, sync_calls)
    if not frames:
        return "  (no running task or thread)"
    summary = traceback.StackSummary.extract((frame, frame.f_lineno or 0) for frame in frames)
    return "".join(summary.format())


_current: Lifecycle | None = None


def get_lifecycle() -> Lifecycle:
    """This process's lifecycle."""
    global _current
    if _current is None:
        _current = Lifecycle()
    return _current


def reset_lifecycle(*, settings: GracefulSettings | None = None) -> Lifecycle:
    """Start over with a fresh lifecycle (for tests), on ``settings`` if given."""
    global _current
    _current = Lifecycle(settings=settings)
    return _current


def is_shutting_down() -> bool:
    """True from the shutdown signal on (DRAINING and later)."""
    return get_lifecycle().shutting_down
