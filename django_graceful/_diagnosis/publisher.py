"""The heartbeat: a thread that writes this worker's snapshot, and watches its event loop.

A daemon thread writes a snapshot (:mod:`.snapshot` says what it holds) every
``HEARTBEAT`` seconds and at every phase change, and probes the event loop
meanwhile: it keeps working while the loop is frozen, and says so (``blocked-loop``,
with the loop thread's stack). At REPORTING the worker writes its *last shutdown
report*, which outlives the process. Each hang is announced once, with
``hang_detected``.

At shutdown no store I/O runs in the loop thread: the last report is built there (no
I/O), then written, and the live snapshot removed, by a thread of their own; the loop
waits for them at STOPPED, at most until the end of the shutdown budget (a store that
does not answer is logged once and skipped, and the watchdog never has to act). When
the last report cannot be written (a full disk), the live snapshot stays: the last one
written is the worker's last word, and ``checkshutdown`` reports the worker as died with
what it held then; the warning says when that snapshot was written, or that none ever
was (then nothing of the worker is left to read).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import signals
from .._core.lifecycle import Lifecycle, Phase, get_lifecycle
from .._core.registry import Tracked
from .._core.safetext import visible
from .hangs import BLOCKED_AFTER
from .snapshot import MAX_ENDED, FoundHang, FrozenLoop, Header, build, host_id
from .stores import Store, StoreError, open_store, pid_alive

logger = logging.getLogger("django_graceful")

#: How often the heartbeat thread asks the event loop whether it still answers.
PROBE_INTERVAL = 0.25
#: Hangs logged one by one per heartbeat; the rest in one line, by kind.
MAX_LOGGED_HANGS = 10
#: The most the shutdown waits for the store (the last report, removing the snapshot).
LOOP_WRITE_TIMEOUT = 2.0
#: The least the shutdown's writes get, even at the end of the budget (well within the
#: watchdog's ``EXIT_SLACK``): a healthy store writes in milliseconds.
WRITE_FLOOR = 0.5
#: How much longer than the closing thread the loop waits (it logs why it gave up).
JOIN_MARGIN = 0.05
#: The most the lifecycle's last resort waits for its last words to be written.
LAST_WORDS_WAIT = 1.0


class Publisher:
    """Writes this worker's snapshots for one lifecycle, from its heartbeat thread."""

    def __init__(self, lifecycle: Lifecycle, store: Store | None = None) -> None:
        self.lifecycle = lifecycle
        self.host = host_id()
        self.pid = os.getpid()
        self._store = store
        #: Held while building a snapshot (the loop thread builds the last report).
        self._building = threading.Lock()
        #: Held while the store is written to: one write at a time, never by the loop.
        self._io = threading.Lock()
        #: The last report and the live snapshot's removal, at shutdown.
        self._closer: threading.Thread | None = None
        self._deadline: float | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = time.time()
        self._closing_at: float | None = None
        #: When the heartbeat first saw an item told to stop (only the token knew).
        self._told_seen: dict[int, float] = {}
        #: (item id, hang kind) already announced with ``hang_detected``.
        self._announced: set[tuple[int, str]] = set()
        self._loop_thread: int | None = None
        self._probe_sent: float | None = None
        self._blocked_reported = False
        self._failing = False
        #: When (Unix time) a live snapshot was last written; None: never.
        self._live_written: float | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.lifecycle.settings, self.host, self.pid)
        return self._store

    # -- phases -----------------------------------------------------------------------

    def on_phase(self, phase: Phase) -> None:
        """The lifecycle's phase listener (called in the loop thread)."""
        if phase == Phase.CLOSING:
            self._closing_at = time.monotonic()  # start_thread threads are told to stop
        if phase == Phase.SERVING:
            self.start()
        elif self._thread is None:
            return
        elif phase == Phase.REPORTING:
            self._close(last=True)
        elif phase == Phase.STOPPED:
            self.stop()
        else:
            self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self.pid = os.getpid()
        self._started_at = time.time()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="graceful-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat; the last report (if due) and removing the live snapshot
        happen in their own thread, waited for until the budget ends (``_until``)."""
        self._close(last=False)
        closer = self._closer
        assert closer is not None
        # a moment past the closing thread's own deadline: it says why it gave up
        closer.join(max(0.0, self._until() + JOIN_MARGIN - time.monotonic()))
        if closer.is_alive():
            self._failed(
                "did not answer within the shutdown budget: skipped (the worker's last "
                "report and live snapshot are as the store has them)",
                force=True,
            )

    def _close(self, *, last: bool) -> None:
        """Once: no more heartbeat writes; the last report (``last``) built now, then
        written and the live snapshot removed by the closing thread."""
        if self._closer is not None:
            return
        self._stopping.set()
        self._wake.set()
        text: str | None = None
        found: list[FoundHang] = []
        if last:
            with self._building:
                document, found = self.snapshot(last=True)
            text = json.dumps(document, separators=(",", ":"))
        self._closer = threading.Thread(
            target=self._closing,
            args=(text, found),
            name="graceful-last-report",
            daemon=True,
        )
        self._closer.start()

    def last_resort(self, why: str) -> None:
        """The lifecycle ends the process itself (the watchdog, a server that would never
        exit): the last report is written again, saying ``why`` (``ended``), so that
        checkshutdown never reads this end as a clean one. Waited for ``LAST_WORDS_WAIT``
        at most, from the thread that ends the process."""
        if self._thread is None:
            return  # never published: nothing of this worker to correct

        def write() -> None:
            if not self._building.acquire(timeout=LAST_WORDS_WAIT):
                return
            try:
                document, _ = self.snapshot(last=True)
            finally:
                self._building.release()
            document["ended"] = visible(why, MAX_ENDED)
            if self._io.acquire(timeout=LAST_WORDS_WAIT):
                try:
                    self.store.write(json.dumps(document, separators=(",", ":")), last=True)
                finally:
                    self._io.release()

        writer = threading.Thread(
            target=self._guarded, args=(write,), name="graceful-last-words", daemon=True
        )
        writer.start()
        writer.join(LAST_WORDS_WAIT)

    def _until(self) -> float:
        """When the loop stops waiting for the store: ``LOOP_WRITE_TIMEOUT`` from now at
        most, and never past the end of the shutdown budget (but for ``WRITE_FLOOR``)."""
        if self._deadline is None:
            now = time.monotonic()
            until = now + LOOP_WRITE_TIMEOUT
            began = self.lifecycle.shutdown_began
            if began is not None:
                until = max(min(until, began + self.lifecycle.budget()), now + WRITE_FLOOR)
            self._deadline = until
        return self._deadline

    def _closing(self, text: str | None, found: list[FoundHang]) -> None:
        """The closing thread: the last report, then (if it was written) the live
        snapshot's removal; each waits for a heartbeat write under way until ``_until``."""
        if not self._io.acquire(timeout=max(0.0, self._until() - time.monotonic())):
            self._failed(
                "still busy with the previous write at the end of the shutdown budget: "
                f"the last report is not written; {self._last_word()}",
                force=True,
            )
            return
        try:
            if text is not None:
                try:
                    self.store.write(text, last=True)
                except Exception as exc:
                    self._failed(
                        f"the last shutdown report is not written ({_reason(exc)}); "
                        f"{self._last_word()}",
                        force=True,
                        error=exc,
                    )
                    return
                self._written()
                with self._building:
                    # at REPORTING the lifecycle logs each hung item with its stack already
                    self._announce(found, log=False)
            try:
                self.store.remove_live()
            except Exception as exc:
                self._failed(f"the live snapshot is not removed ({_reason(exc)})", error=exc)
        finally:
            self._io.release()

    def _last_word(self) -> str:
        """What is left of this worker for ``checkshutdown``, its last report lost."""
        written = self._live_written
        if written is None:
            return (
                "no snapshot of this worker was ever written: checkshutdown cannot know "
                "it ran nor what it held"
            )
        return (
            f"its live snapshot written {time.time() - written:.1f} s ago stays as its last "
            "word (checkshutdown reports the worker as died)"
        )

    # -- the heartbeat thread ---------------------------------------------------------

    def _run(self) -> None:
        if not self._guarded(self._prepare):
            return
        heartbeat = self.lifecycle.settings.HEARTBEAT
        next_write = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if not self._probe(now):
                break  # the loop is gone
            blocked = self._blocked_for(now) is not None
            if now >= next_write or self._wake.is_set() or blocked != self._blocked_reported:
                self._wake.clear()
                self._blocked_reported = blocked
                self.publish()
                next_write = time.monotonic() + heartbeat
            self._wake.wait(max(0.0, min(PROBE_INTERVAL, next_write - time.monotonic())))

    def _prepare(self) -> None:
        self.store.prepare()
        self.store.tidy(pid_alive)

    def _probe(self, now: float) -> bool:
        """Ask the loop to answer (once at a time); False when there is no loop any more."""
        loop = self.lifecycle.loop
        if loop is None or loop.is_closed():
            return False
        if self._probe_sent is None:
            self._probe_sent = now
            try:
                loop.call_soon_threadsafe(self._answered)
            except RuntimeError:  # closed meanwhile
                return False
        return True

    def _answered(self) -> None:
        self._probe_sent = None
        if self._blocked_reported:
            self._wake.set()  # say at once that the loop answers again

    def _blocked_for(self, now: float) -> float | None:
        sent = self._probe_sent
        if sent is None or now - sent <= BLOCKED_AFTER:
            return None
        return now - sent

    # -- publishing -------------------------------------------------------------------

    def publish(self, *, last: bool = False) -> dict[str, Any] | None:
        """Build and write a snapshot (or the last report); announce new hangs.

        Never raises: a failure is logged once (until a write succeeds again). Nothing
        is written once the shutdown's writes began (``_close``).
        """
        if self._stopping.is_set():
            return None
        with self._building:
            try:
                document, found = self.snapshot(last=last)
            except Exception as exc:
                self._failed(f"{type(exc).__name__}: {exc}", error=exc)
                return None
        text = json.dumps(document, separators=(",", ":"))
        with self._io:
            if self._stopping.is_set():
                return None
            try:
                self.store.write(text, last=last)
            except Exception as exc:
                self._failed(_reason(exc), error=exc)
                return None
            if not last:
                self._live_written = document["time"]
        self._written()
        with self._building:
            # at REPORTING the lifecycle logs each hung item with its stack already
            self._announce(found, log=not last)
        return document

    def _guarded(self, action: Any) -> bool:
        """Run a store action (the heartbeat's first: ``prepare``); log a failure once."""
        try:
            action()
        except Exception as exc:
            self._failed(_reason(exc), error=exc)
            return False
        return True

    def _failed(self, reason: str, *, force: bool = False, error: Exception | None = None) -> None:
        """Log a store failure: once until a write works again (``force``: always)."""
        if self._failing and not force:
            return
        self._failing = True
        logger.warning(
            "could not write the worker snapshot to %s: %s%s",
            self._store.description if self._store is not None else "the store",
            reason,
            "" if force else " (further failures are not logged until it works again)",
            exc_info=error is not None and not isinstance(error, StoreError | OSError),
        )

    def _written(self) -> None:
        """A write worked: say so once, if the last one had failed (not at shutdown,
        when the closing thread's word is the last)."""
        if self._failing and not self._stopping.is_set():
            self._failing = False
            logger.info("worker snapshots are written again")

    def _announce(self, found: list[FoundHang], *, log: bool = True) -> None:
        """Send ``hang_detected`` (and log a warning) for each hang not announced yet."""
        current = set()
        logged = 0
        unlogged: collections.Counter[str] = collections.Counter()
        for item, kind, location, key in found:
            current.add((key, kind))
            if (key, kind) in self._announced:
                continue
            self._announced.add((key, kind))
            if log and logged < MAX_LOGGED_HANGS:
                logged += 1
                what = _label(item) if item is not None else "the event loop"
                logger.warning("hang detected: %s, %s, at %s", kind, what, location or "?")
            elif log:
                unlogged[kind] += 1
            signals.hang_detected.send_robust(
                sender=Lifecycle, item=item, kind=kind, location=location
            )
        if unlogged:
            logger.warning(
                "hang detected: %d more (%s); manage.py checkshutdown lists them",
                sum(unlogged.values()),
                ", ".join(f"{kind}: {count}" for kind, count in unlogged.most_common()),
            )
        if len(self._announced) > len(current):
            live_ids = {item.id for item in self.lifecycle.registry}
            self._announced = {
                pair for pair in self._announced if pair in current or pair[0] in live_ids
            }

    # -- building ---------------------------------------------------------------------

    def snapshot(self, *, last: bool = False) -> tuple[dict[str, Any], list[FoundHang]]:
        """This worker's snapshot (``last``: its last shutdown report), and the hangs
        found in it."""
        lifecycle = self.lifecycle
        now = time.monotonic()
        items = list(lifecycle.registry)  # in the order the work began
        items += lifecycle.registry.lingering_threads()
        driver = lifecycle.driver
        header = Header(
            host=self.host,
            pid=self.pid,
            server=driver.name if driver is not None else None,
            phase=lifecycle.phase.name.lower(),
            started=self._started_at,
            budget=lifecycle.budget(),
        )
        document, found = build(
            items,
            header,
            lifecycle.settings,
            now=now,
            wall=time.time(),
            told=functools.partial(self._told, now=now),
            frozen=None if last else self._frozen(now),
            last=last,
        )
        if self._told_seen:  # forget the items no longer looked at closely
            seen = {items[int(n)].id for n in document["details"]}
            for key in [k for k in self._told_seen if k not in seen]:
                del self._told_seen[key]
        return document, found

    def _told(self, item: Tracked, now: float) -> float | None:
        """Seconds since the work was told to stop, or None."""
        told_at = item.told_at
        if item.thread is not None and self._closing_at is not None:
            # a start_thread thread is told at CLOSING (its stop event)
            told_at = self._closing_at if told_at is None else min(told_at, self._closing_at)
        if told_at is None and item.token_reason is not None:
            # only the token was told (a sync view's timeout): from when we first saw it
            told_at = self._told_seen.setdefault(item.id, now)
        return None if told_at is None else now - told_at

    def _frozen(self, now: float) -> FrozenLoop | None:
        """The event loop, if it has not answered the probe for ``BLOCKED_AFTER``."""
        blocked = self._blocked_for(now)
        if blocked is None or self._loop_thread is None:
            return None
        return FrozenLoop(blocked, self._loop_thread, _running_task(self.lifecycle))


def _running_task(lifecycle: Lifecycle) -> Any:
    """The task the event loop runs right now (read from another thread)."""
    loop = lifecycle.loop
    if loop is None:
        return None
    try:
        return asyncio.current_task(loop)
    except Exception:
        return None


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def _label(item: Tracked) -> str:
    if item.view:
        return f"{item.view} ({item.what})"
    return f"{item.kind} {item.what}"


def install() -> Callable[[Phase], None]:
    """Publish this process's snapshots (called once, from the app's ``ready()``): a
    fresh publisher for each cycle of the lifecycle, its thread ending at STOPPED."""
    lifecycle = get_lifecycle()
    current: list[Publisher] = []

    def on_phase(phase: Phase) -> None:
        if phase == Phase.STARTING or not current:
            current[:] = [Publisher(lifecycle)]
        current[0].on_phase(phase)

    def on_last_resort(why: str) -> None:
        if current:
            current[0].last_resort(why)

    lifecycle.on_phase(on_phase)
    lifecycle.on_last_resort(on_last_resort)
    return on_phase
