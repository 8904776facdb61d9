"""What the server's stops mean: the lifecycle's policy between its driver and its phases.

One :class:`ServerStops` per lifespan cycle, made when the driver is attached; it is the
``driver.Control`` the driver is given, and the only way a driver reaches the lifecycle.
It decides, for the lifecycle:

- what each stop the driver reports means (``stop_requested``): the first drains (a
  quick one skips to CANCELLING; a worker stopping *alone*, while its siblings serve on,
  stops accepting first; so does a process whose parent keeps the listening sockets for
  the next process, a *hand-over*: a development server's reload; where the next
  process will listen on a socket of its own, the door is shut at once instead); a
  repeat of the same kind within ``SAME_SIGNAL_WINDOW`` is the same stop (Ctrl-C reaches
  a server's parent and its workers, and the parent forwards it); a later one escalates,
  a graceful one only where the server does not repeat its signals itself
  (``Driver.repeats_escalate``); once the server is released, a further signal hurries
  it (``Driver.hurry``);
- the budget fitted to the time the server gives a stopping worker (``server_limit``), and
  a quick stop's short window (``quick_limit``);
- how a stop seen in another thread than the loop's is run there, waited for from that
  thread (``stop_and_wait``: the process exits while the server serves in a thread of its
  own);
- when the server may stop (``release``, once): at STOPPED, after the clients of hung
  requests are answered 503 and the connections the server would wait for closed
  (``hand_over``); at once for a worker stopping alone (after ``SETTLE``) or handing
  over;
- when the process must end instead, in one place (``last_resort``): a watchdog past
  the budget, a server teardown hung by tasks that ignore cancellation, a server that
  would wait for hung work for ever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .door import shut_now
from .driver import Driver, Ending
from .hooks import running_hooks
from .phases import EXIT_SLACK, MIN_CANCEL, Phase
from .process import end_process
from .stacks import thread_frames

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .registry import Tracked

logger = logging.getLogger("django_graceful")

#: Seconds within which a repeated stop signal of the same kind (graceful or quick) counts
#: as the one before.
SAME_SIGNAL_WINDOW = 1.0

#: When this worker stops alone (its siblings serve on), how long it still serves the
#: connections it accepted just before it stopped accepting, before CLOSING answers 503.
SETTLE = 0.2

#: Seconds the 503s to the clients of hung requests may take to go out, all of them
#: together (a client that reads nothing does not hold the stop).
ANSWER_WAIT = 1.0

#: The status the watchdog ends the process with. A server whose worker processes are
#: supervised by a parent of its own (Granian, Gunicorn, Hypercorn with workers) decides
#: what status the server exits with; none of them passes this one on (README).
WATCHDOG_STATUS = 1

#: Seconds the tasks get to honour the last cancel of the server's teardown of its event
#: loop before the process is ended instead (``Driver.forced_ending``).
TEARDOWN_GRACE = 0.5


class ServerStops:
    """The lifecycle's side of the driver contract, for one cycle (``driver.Control``)."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        driver: Driver,
        loop: asyncio.AbstractEventLoop,
        next_cycle_began: threading.Event,
    ) -> None:
        self._lifecycle = lifecycle
        self._driver = driver
        self.loop = loop
        #: Set when the process starts another cycle: this cycle's watchdog stands down.
        self._next_cycle_began = next_cycle_began
        #: The first signal (handed to the server at release), when the last stop of each
        #: kind (quick or not) was counted, whether this worker stops alone, whether a
        #: quick stop was asked, whether the server was released.
        self._first_signal: int | None = None
        self._last_request_at: dict[bool, float] = {}
        self._alone = False
        #: Whether the port passes to the next process as this one stops (a reload): the
        #: parent keeps the listening sockets, or the door was shut at the signal.
        self.handing_over = False
        self._quick = False
        self._released = False
        #: Set once the server was released (for ``stop_and_wait``, in another thread).
        self._released_event = threading.Event()

    def attach(self, *, handle_signals: bool) -> None:
        """Let the driver find its server and take its stop signals; fit the budget in
        the time the server gives a stopping worker; guard the server's teardown."""
        driver, lifecycle = self._driver, self._lifecycle
        driver.attach(self, handle_signals=handle_signals)
        limit = driver.server_limit()
        if limit is not None:
            seconds, what = limit
            if lifecycle.budget() > seconds - EXIT_SLACK:
                lifecycle.limit_budget(
                    max(seconds - EXIT_SLACK, 0.0),
                    f"{what} less {EXIT_SLACK:g} s for the worker to exit",
                )
        if driver.guards_teardown:
            # A fresh context: the startup may run inside the first request (no lifespan).
            driver.keep(
                self.loop.create_task(
                    self._guard_teardown(),
                    name="django_graceful teardown guard",
                    context=contextvars.Context(),
                )
            )

    # -- driver.Control ------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._lifecycle.shutting_down or self._alone or self._first_signal is not None

    def stop_requested(
        self,
        signum: int | None,
        *,
        alone: bool = False,
        trigger: str | None = None,
        quick: bool | None = None,
    ) -> bool:
        """What a stop the driver reports means (in the loop thread); False if it was
        taken for a repeat of the last one of its kind within ``SAME_SIGNAL_WINDOW``."""
        driver, lifecycle = self._driver, self._lifecycle
        if quick is None:
            quick = signum is not None and signum in driver.quick_signals
        now = time.monotonic()
        if signum is not None:
            last = self._last_request_at.get(quick)
            if last is not None and now - last < SAME_SIGNAL_WINDOW:
                return False
            self._last_request_at[quick] = now
        if self._released:
            driver.hurry()
            return True
        name = trigger or (signal.Signals(signum).name if signum is not None else "stop")
        first = not self.stopping
        if signum is not None and self._first_signal is None:
            self._first_signal = signum
        if first:
            self._first_stop(name, quick=quick, alone=alone and not quick)
        elif signum is None:
            pass  # the server's own stop, seen again: no operator asked for more
        elif quick and not self._quick:
            self._quick = True
            logger.info("%s received: quick stop, skipping to CANCELLING", name)
            lifecycle.escalate()
            self._fit_quick_limit()
        elif quick or driver.repeats_escalate:
            lifecycle.escalate()
        return True

    def _stop_unless_stopping(self, signum: int | None, trigger: str) -> None:
        if not self.stopping:
            self.stop_requested(signum, trigger=trigger)

    async def stopped(self, trigger: str) -> None:
        lifecycle = self._lifecycle
        if lifecycle.phase >= Phase.STOPPED:
            return
        if lifecycle.shutdown_began is None:
            self.stop_requested(None, trigger=trigger)
        await lifecycle.shutdown(trigger)

    def hung(self) -> list[Tracked]:
        return list(self._lifecycle.registry)

    def stop_and_wait(
        self, trigger: str, signum: int | None, interrupts: Mapping[type[BaseException], int]
    ) -> bool:
        """From a thread other than the loop's, which the process ends with (its main
        thread, at the interpreter's exit, while the server serves in a thread of its own):
        the shutdown, begun now (named ``trigger``; by ``signum``, or None: no signal) if
        it has not, waited for until the server is released, at most until the exit
        deadline; whether it got there.

        An exception of ``interrupts`` raised in this thread meanwhile is a signal's
        handler speaking (``KeyboardInterrupt``: SIGINT): reported as that signal, so a
        second Ctrl-C escalates as anywhere else, and the wait goes on.
        """
        if self._released_event.is_set():
            return True
        if not self.loop.is_running():
            return False  # the server's loop has ended: nothing left to run it in
        self.loop.call_soon_threadsafe(self._stop_unless_stopping, signum, trigger)
        began = asyncio.run_coroutine_threadsafe(self.stopped(trigger), self.loop)
        deadline = self.exit_deadline()
        while True:
            try:
                began.result(max(deadline - time.monotonic(), 0))
                # STOPPED: the server is released now, or once hung requests are answered
                # (none where the cycle ended before it served: no driver to release).
                if self._lifecycle.stops is not self or self._released_event.wait(
                    max(deadline - time.monotonic(), 0)
                ):
                    return True
                raise TimeoutError
            except tuple(interrupts) as exc:
                signum = interrupts[type(exc)]
                self.loop.call_soon_threadsafe(self.stop_requested, signum)
                deadline = self.exit_deadline()
            except TimeoutError:
                logger.error(
                    "shutdown (%s) not over within its budget; the process exits now", trigger
                )
                return False
            except (Exception, concurrent.futures.CancelledError):
                logger.exception("shutdown (%s) failed; the process exits now", trigger)
                return False

    def exit_deadline(self) -> float:
        """By when (``time.monotonic()``) the server should have let the process end: the
        budget and half of ``EXIT_SLACK`` from the first signal (from now, before it);
        the watchdog ends it at the whole ``EXIT_SLACK``."""
        lifecycle = self._lifecycle
        began = lifecycle.shutdown_began or time.monotonic()
        return began + lifecycle.budget() + EXIT_SLACK / 2

    # -- the stop ------------------------------------------------------------------------

    def _first_stop(self, name: str, *, quick: bool, alone: bool) -> None:
        handover = not quick and not alone and self._ask(self._driver.parent_keeps_listeners)
        self._quick, self._alone = quick, alone or handover
        if alone:
            where = f"; {self._driver.name}'s other workers take the new connections"
        elif handover:
            where = (
                f"; the parent (pid {os.getppid()}) keeps the listening sockets open "
                "for its next process"
            )
        else:
            where = ""
        logger.info(
            "%s received: %s%s",
            name,
            "quick stop, skipping to CANCELLING" if quick else "draining",
            where,
        )
        if alone:
            # Connections this worker accepted just before it stopped accepting still get
            # their first request served, rather than a 503.
            self._driver.stop_accepting()
            self.loop.call_later(SETTLE, self._begin_alone, name)
            return
        if handover:
            self.handing_over = True
            # New connections wait in the backlog for the next process; the server lets go
            # of the idle ones at once, as it would without us (no SETTLE: a reload of a
            # development server should take no longer than the server's own).
            self._driver.stop_accepting()
            self._begin_alone(name)
            return
        if not quick and self._ask(self._driver.next_process_listens) and shut_now():
            # No DRAINING: readiness would tell a balancer nothing the shut door does not.
            self.handing_over = True
            logger.info(
                "listening sockets shut to new connections: they try again when %s's "
                "next process listens",
                self._driver.name,
            )
        self._lifecycle.begin_shutdown(name, drain=not quick and not self.handing_over)
        self._arm_watchdog()
        if quick:
            self._lifecycle.escalate()

    def _ask(self, fact: Callable[[], bool]) -> bool:
        """A fact of the driver's, False where asking it failed."""
        try:
            return fact()
        except Exception:
            logger.debug("could not ask %s %s", self._driver.name, fact.__name__, exc_info=True)
            return False

    def _begin_alone(self, name: str) -> None:
        if self._lifecycle.shutdown_began is None:
            self._lifecycle.begin_shutdown(name, drain=False)
        self._arm_watchdog()
        self._release()

    def _fit_quick_limit(self) -> None:
        """A quick stop during the server's stop leaves ``quick_limit()`` s before it kills
        the worker: end CANCELLING early enough for the hooks (by their bounds) to run."""
        window = self._driver.quick_limit()
        if window is None:
            return
        lifecycle = self._lifecycle
        s = lifecycle.settings
        hooks = lifecycle.budget() - s.DRAIN_DELAY - s.GRACE_PERIOD - s.CANCEL_TIMEOUT
        cancelling = max(window - EXIT_SLACK - hooks, MIN_CANCEL)
        if cancelling < s.CANCEL_TIMEOUT:
            self.loop.call_later(cancelling, self._end_cancelling)

    def _end_cancelling(self) -> None:
        if self._lifecycle.phase == Phase.CANCELLING:
            self._lifecycle.escalate()

    def whole_server_stops(self) -> bool:
        """Whether the server as a whole stops, not this worker alone while its siblings
        serve on (or its parent keeps the listening sockets for the next process): one
        process, or a signal that stopped a worker not ``alone``."""
        return self._driver.one_process or (self._first_signal is not None and not self._alone)

    def _release(self) -> None:
        """Let the server stop in its own way, once."""
        if self._released:
            return
        self._released = True
        try:
            self._driver.release(self._first_signal, quick=self._quick, hung=self.hung())
        finally:
            self._released_event.set()

    def hand_over(self) -> None:
        """STOPPED: the server stops now, and waits for nothing hung. Hung requests are
        answered first (503 + ``Connection: close``, where their response had not begun)
        and the connections the server would wait for closed; a server that would wait for
        hung work for ever (``holds_hung_work``) is not waited for: the process ends."""
        hung = self.hung()
        if not hung:
            self._driver.finish(hung)
            self._release()
            return
        self._driver.keep(self.loop.create_task(self._answer_then_release(hung)))

    async def _answer_then_release(self, hung: list[Tracked]) -> None:
        driver = self._driver
        answered = await answer_hung(hung)
        if driver.holds_hung_work:
            self.last_resort(
                f"{len(hung)} task(s) still running at STOPPED would keep {driver.name} from "
                f"ever exiting",
                driver.forced_ending(self._first_signal) or Ending(1),
            )
            return
        try:
            requested = self._first_signal is not None or self._alone
            requests = driver.open_requests(hung) if requested else []
            for request in requests:
                try:
                    driver.close_request(request)
                except Exception:
                    logger.debug("could not close a hung request's connection", exc_info=True)
            if answered or requests:
                logger.warning(
                    "%s: answered %d hung request(s) 503, closed %d connection(s)",
                    driver.name,
                    answered,
                    len(requests),
                )
            driver.finish(hung)
        finally:
            self._release()

    # -- the last resort -----------------------------------------------------------------

    def last_resort(self, why: str, ending: Ending) -> None:
        """End the process now, saying why: the one way the lifecycle ends a process."""
        logger.error("%s; ending the process %s (pid %d)", why, ending, os.getpid())
        self._last_words(f"the process was ended {ending}: {why}", ending.status)
        end_process(ending.status, ending.signal)

    def _last_words(self, why: str, status: int) -> None:
        """Tell the lifecycle's listeners and the driver why the process ends now."""
        self._lifecycle.last_words(why)
        try:
            self._driver.last_words(why, status)
        except Exception:
            logger.exception("%s's driver failed to take the last words", self._driver.name)

    async def _guard_teardown(self) -> None:
        """Wait for the server's teardown of the event loop (it cancels every task, this
        one too, and awaits them); once the server is released, end the process if tasks
        that ignore cancellation would hang it (``Driver.forced_ending``)."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            driver = self._driver
            if self._released:
                driver.tearing_down()
            ending = driver.forced_ending(self._first_signal)
            if not self._released or ending is None:
                raise
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            if driver.server_bounds_teardown():
                others = [t for t in others if self._tracked(t) is not None]
            pending: set[asyncio.Task[Any]] = set()
            if others:
                _, pending = await asyncio.wait(others, timeout=TEARDOWN_GRACE)
            if pending:
                self.last_resort(
                    f"{len(pending)} task(s) ignore cancellation and would keep the event loop "
                    "from closing: " + "; ".join(sorted({self._describe(t) for t in pending})),
                    ending,
                )
            raise

    def _tracked(self, task: asyncio.Task[Any]) -> Tracked | None:
        return next(
            (item for item in self.hung() if task is item.task or task is item.view_task), None
        )

    def _describe(self, task: asyncio.Task[Any]) -> str:
        item = self._tracked(task)
        if item is not None:
            return item.describe()
        coro = task.get_coro()
        return f"task {task.get_name()} ({getattr(coro, '__qualname__', type(coro).__name__)})"

    def _arm_watchdog(self) -> None:
        """End the process if it outlives the budget (a task that swallows every cancel
        can otherwise keep a server's event loop from ever finishing)."""
        deadline = self._lifecycle.budget() + EXIT_SLACK
        thread = threading.Thread(
            target=self._watchdog, args=(deadline,), name="graceful-watchdog", daemon=True
        )
        thread.start()

    def _watchdog(self, deadline: float) -> None:
        # Past STOPPED it still watches the server's own exit; it stands down only when
        # the process starts another cycle (it lives on, as a test process does).
        if self._next_cycle_began.wait(deadline):
            return
        main = thread_frames().get(threading.main_thread().ident or 0)
        stack = "".join(traceback.format_stack(main)) if main is not None else "?"
        still = "; ".join(item.describe() for item in self.hung()) or "no tracked work"
        now = time.monotonic()
        hooks = "; ".join(hook.describe(now) for hook in running_hooks())
        logger.critical(
            "process still alive %.1f s after the shutdown signal (budget %.1f s), phase %s%s; "
            "exiting now with status %d. Still running: %s. Main thread:\n%s",
            deadline,
            deadline - EXIT_SLACK,
            self._lifecycle.phase.name,
            f": {hooks}" if hooks else "",
            WATCHDOG_STATUS,
            still,
            stack,
        )
        self._last_words(
            f"ended by the watchdog {deadline:.1f} s after the shutdown signal (budget "
            f"{deadline - EXIT_SLACK:.1f} s), phase {self._lifecycle.phase.name}"
            + (f": {hooks}" if hooks else f"; still running: {still}"),
            WATCHDOG_STATUS,
        )
        end_process(WATCHDOG_STATUS)


async def answer_hung(hung: list[Tracked]) -> int:
    """Answer the client of each hung request whose response had not begun: 503 +
    ``Connection: close`` through the server's ``send`` (``Response.refuse``), within
    ``ANSWER_WAIT``; how many were answered."""
    answers = [item.response.refuse() for item in hung if item.response is not None]
    if not answers:
        return 0
    done, pending = await asyncio.wait(
        [asyncio.ensure_future(answer) for answer in answers], timeout=ANSWER_WAIT
    )
    for task in pending:
        task.cancel()
    answered = 0
    for task in done:
        if task.exception() is not None:
            logger.debug("could not answer a hung request", exc_info=task.exception())
        else:
            answered += bool(task.result())
    return answered
