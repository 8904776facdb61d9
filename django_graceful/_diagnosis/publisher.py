"""The heartbeat: a thread that writes this worker's snapshot, and watches its event loop.

A daemon thread writes a snapshot (:mod:`.snapshot` says what it holds) every
``HEARTBEAT`` seconds and at every phase change, and probes the event loop
meanwhile: it keeps working while the loop is frozen, and says so (``blocked-loop``,
with the loop thread's stack). At REPORTING the worker writes its *last shutdown
report*, which outlives the process. Each hang is announced once, with
``hang_detected``.
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
from typing import Any

from .. import signals
from .._core.lifecycle import Lifecycle, Phase, get_lifecycle
from .._core.registry import Tracked
from .hangs import BLOCKED_AFTER
from .snapshot import FoundHang, FrozenLoop, Header, build, host_id
from .stores import Store, StoreError, open_store, pid_alive

logger = logging.getLogger("django_graceful")

#: How often the heartbeat thread asks the event loop whether it still answers.
PROBE_INTERVAL = 0.25
#: Hangs logged one by one per heartbeat; the rest in one line, by kind.
MAX_LOGGED_HANGS = 10
#: The most the loop thread waits for a write (the last report, removing the snapshot).
LOOP_WRITE_TIMEOUT = 2.0


class Publisher:
    """Writes this worker's snapshots for one lifecycle, from its heartbeat thread."""

    def __init__(self, lifecycle: Lifecycle, store: Store | None = None) -> None:
        self.lifecycle = lifecycle
        self.host = host_id()
        self.pid = os.getpid()
        self._store = store
        self._lock = threading.Lock()
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
            # now, before the hooks run and the process ends; bounded, as a slow cache
            # must not hold the shutdown (the loop waits: nothing changes meanwhile)
            writer = threading.Thread(
                target=self.publish,
                kwargs={"last": True},
                name="graceful-last-report",
                daemon=True,
            )
            writer.start()
            writer.join(LOOP_WRITE_TIMEOUT)
            self._wake.set()
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
        """Stop the heartbeat and remove the live snapshot (the last report stays).

        A write under way finishes first, and none follows. Should it take long (a slow
        cache), the heartbeat thread removes the snapshot when it is done."""
        self._stopping.set()
        self._wake.set()
        if self._lock.acquire(timeout=LOOP_WRITE_TIMEOUT):
            try:
                self._guarded(self.store.remove_live)
            finally:
                self._lock.release()

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
        if self._stopping.is_set():
            with self._lock:
                self._guarded(self.store.remove_live)

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

        Never raises: a failure is logged once (until a write succeeds again).
        """
        with self._lock:
            document: dict[str, Any] | None = None
            if self._stopping.is_set():
                return None

            def write() -> None:
                nonlocal document
                document, found = self.snapshot(last=last)
                self.store.write(json.dumps(document, separators=(",", ":")), last=last)
                # at REPORTING the lifecycle logs each hung item with its stack already
                self._announce(found, log=not last)

            return document if self._guarded(write) else None

    def _guarded(self, action: Any) -> bool:
        try:
            action()
        except Exception as exc:
            if not self._failing:
                self._failing = True
                reason = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "could not write the worker snapshot to %s: %s (further failures are "
                    "not logged until it works again)",
                    self._store.description if self._store is not None else "the store",
                    reason,
                    exc_info=not isinstance(exc, StoreError | OSError),
                )
            return False
        if self._failing:
            self._failing = False
            logger.info("worker snapshots are written again")
        return True

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
        adapter = lifecycle.adapter
        header = Header(
            host=self.host,
            pid=self.pid,
            server=adapter.name if adapter is not None else None,
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


def _label(item: Tracked) -> str:
    if item.view:
        return f"{item.view} ({item.what})"
    return f"{item.kind} {item.what}"


def install() -> Publisher:
    """Publish this process's snapshots (called once, from the app's ``ready()``)."""
    lifecycle = get_lifecycle()
    publisher = Publisher(lifecycle)
    lifecycle.on_phase(publisher.on_phase)
    return publisher
