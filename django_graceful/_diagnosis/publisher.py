"""What a worker publishes about its in-flight work: snapshots, and the heartbeat writing them.

A daemon thread writes a snapshot every ``HEARTBEAT`` seconds and at every phase
change, and probes the event loop meanwhile: it keeps working while the loop is
frozen, and says so (``blocked-loop``, with the loop thread's stack). At REPORTING
the worker writes its *last shutdown report*, which outlives the process.

A snapshot names the work and where it is, never what it holds: no headers,
cookies, query strings, bodies or local variables. It is one JSON object:

- the worker: ``host``, ``pid``, ``server``, ``phase``, ``time`` and ``started`` (Unix
  time), ``heartbeat``, ``hang_threshold``, ``cancel_timeout``; ``report``: ``"live"``
  or ``"last"``;
- ``items``: every piece of tracked work, as columns (10,000 items must cost
  milliseconds): ``kind`` and ``view`` index the ``kinds`` and ``views`` lists, ``what``
  (method and path, or a task's or thread's name), ``age_ms``;
- ``details``, by item position, for the work worth a closer look (told to stop, a
  thread, or older than ``LOCATE_AFTER``): ``reason``, ``cancelled``, ``told_ms``,
  ``shielded``, ``wait``, ``location`` (``file:line in function``), ``where``, ``chain``
  (the innermost frames) and ``hang``;
- ``loop``: null, or the frozen event loop (``blocked_ms``, ``since``, the loop
  thread's ``location``/``where``/``chain``, and the position of the ``item`` it runs).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from .. import signals
from .._core import stacks
from .._core.lifecycle import Lifecycle, Phase, get_lifecycle
from .._core.registry import Tracked
from . import hangs
from .hangs import HangKind
from .stores import Store, StoreError, open_store, pid_alive

logger = logging.getLogger("django_graceful")

FORMAT = "django_graceful.snapshot"
VERSION = 1
#: Work younger than this that nobody told to stop is listed without its location.
LOCATE_AFTER = 1.0
#: Most items located in one live snapshot (told-to-stop first, then the oldest).
MAX_LOCATED = 200
#: Most items located in a last shutdown report.
MAX_LOCATED_LAST = 2000
#: How often the heartbeat thread asks the event loop whether it still answers.
PROBE_INTERVAL = 0.25
#: The most the loop thread waits for a write (the last report, removing the snapshot).
LOOP_WRITE_TIMEOUT = 2.0
#: Columns of ``items``: ``kind`` and ``view`` index the ``kinds`` and ``views`` lists.
COLUMNS = ("kind", "what", "view", "age_ms")


def host_id() -> str:
    """This host's name in snapshots: ``GRACEFUL_HOST_ID`` if set, else the host name."""
    return os.environ.get("GRACEFUL_HOST_ID") or socket.gethostname()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Publisher:
    """Builds and writes this worker's snapshots for one lifecycle."""

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
        if sent is None or now - sent <= hangs.BLOCKED_AFTER:
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

    def _announce(
        self, found: list[tuple[Tracked | None, str, str | None, Any]], *, log: bool = True
    ) -> None:
        """Send ``hang_detected`` (and log a warning) for each hang not announced yet."""
        current = set()
        for item, kind, location, key in found:
            current.add((key, kind))
            if (key, kind) in self._announced:
                continue
            self._announced.add((key, kind))
            if log:
                what = _label(item) if item is not None else "the event loop"
                logger.warning("hang detected: %s, %s, at %s", kind, what, location or "?")
            signals.hang_detected.send_robust(
                sender=Lifecycle, item=item, kind=kind, location=location
            )
        if len(self._announced) > len(current):
            live_ids = {item.id for item in self.lifecycle.registry}
            self._announced = {
                pair for pair in self._announced if pair in current or pair[0] in live_ids
            }

    # -- building ---------------------------------------------------------------------

    def snapshot(
        self, *, last: bool = False
    ) -> tuple[dict[str, Any], list[tuple[Tracked | None, str, str | None, Any]]]:
        """This worker's snapshot (``last``: its last shutdown report), and the hangs
        found in it as ``(item, kind, location, key)``."""
        lifecycle = self.lifecycle
        settings = lifecycle.settings
        now = time.monotonic()
        items = list(lifecycle.registry)  # in the order the work began
        items += lifecycle.registry.lingering_threads()
        kinds: dict[str, int] = {}
        views: dict[str | None, int] = {}
        columns: dict[str, list[Any]] = {
            "kind": [kinds.setdefault(it.kind, len(kinds)) for it in items],
            "what": [it.what for it in items],
            "view": [views.setdefault(it.view, len(views)) for it in items],
            "age_ms": [int((now - it.started) * 1000) for it in items],
        }
        if last:
            picked = list(range(len(items)))
            threshold = cancel_timeout = 0.0
        else:
            picked = _suspects(items, now - min(LOCATE_AFTER, settings.HANG_THRESHOLD))
            threshold, cancel_timeout = settings.HANG_THRESHOLD, settings.CANCEL_TIMEOUT
        loop, blocked = (None, None) if last else self._loop_state(now, items)
        details, found = self._details(
            items, picked, now, threshold, cancel_timeout, last=last, blocked=blocked
        )
        if loop is not None and blocked is None:
            found.append((None, HangKind.BLOCKED_LOOP, loop["location"], ("loop", loop["since"])))
        adapter = lifecycle.adapter
        document = {
            "format": FORMAT,
            "version": VERSION,
            "report": "last" if last else "live",
            "host": self.host,
            "pid": self.pid,
            "server": adapter.name if adapter is not None else None,
            "phase": lifecycle.phase.name.lower(),
            "time": time.time(),
            "started": self._started_at,
            "heartbeat": settings.HEARTBEAT,
            "hang_threshold": settings.HANG_THRESHOLD,
            "cancel_timeout": settings.CANCEL_TIMEOUT,
            "budget": lifecycle.budget(),
            "loop": loop,
            "kinds": list(kinds),
            "views": list(views),
            "items": columns,
            "details": details,
        }
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

    def _details(
        self,
        items: list[Tracked],
        picked: list[int],
        now: float,
        threshold: float,
        cancel_timeout: float,
        *,
        last: bool,
        blocked: tuple[int, dict[str, Any]] | None,
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[Tracked | None, str, str | None, Any]]]:
        """A closer look at the ``picked`` items (by position): why and since when they
        were told to stop, where they are (the first ``MAX_LOCATED``), their hang."""
        cap = MAX_LOCATED_LAST if last else MAX_LOCATED
        told = {n: self._told(items[n], now) for n in picked}
        if len(picked) > cap:  # locate those told to stop longest ago, then the oldest
            picked = sorted(picked, key=lambda n: (told[n] is None, -(told[n] or 0.0), n))
        frames_by_thread: dict[int, Any] | None = None
        sync_calls: dict[int, int] = {}
        details: dict[str, dict[str, Any]] = {}
        found: list[tuple[Tracked | None, str, str | None, Any]] = []
        for rank, n in enumerate(picked):
            item = items[n]
            detail: dict[str, Any] = {}
            reason = item.stop_reason
            if reason is not None:
                detail["reason"] = str(reason)
            if item.cancel_count:
                detail["cancelled"] = item.cancel_count
            told_for = told[n]
            if told_for is not None:
                detail["told_ms"] = _ms(told_for)
            shielded = item.shielded
            if shielded:
                detail["shielded"] = True
            if rank < cap:
                if frames_by_thread is None:
                    frames_by_thread = stacks.thread_frames()
                    sync_calls = stacks.sync_calls(frames_by_thread)
                _locate(item, detail, frames_by_thread, sync_calls)
            if blocked is not None and blocked[0] == n:
                hang: HangKind | None = HangKind.BLOCKED_LOOP
                for key in ("location", "where", "chain"):
                    detail[key] = blocked[1][key]
            else:
                hang = hangs.classify(
                    item.kind,
                    now - item.started,
                    told_for,
                    shielded=shielded,
                    wait=detail.get("wait"),
                    threshold=threshold,
                    cancel_timeout=cancel_timeout,
                )
                if hang is None and last:
                    hang = HangKind.SLOW  # still running when the budget was spent
            if hang is not None:
                detail["hang"] = hang
                found.append((item, hang, detail.get("location"), item.id))
            details[str(n)] = detail
        if self._told_seen:
            seen = {items[n].id for n in picked}
            for key in [k for k in self._told_seen if k not in seen]:
                del self._told_seen[key]
        return details, found

    def _loop_state(
        self, now: float, items: list[Tracked]
    ) -> tuple[dict[str, Any] | None, tuple[int, dict[str, Any]] | None]:
        """The frozen loop, if it is: for how long, its thread's stack, the work in it."""
        blocked = self._blocked_for(now)
        if blocked is None or self._loop_thread is None:
            return None, None
        frame = stacks.thread_frames().get(self._loop_thread)
        frames = stacks.stack(frame)
        innermost = stacks.innermost_project(frames) or (
            stacks.where(frames[-1]) if frames else None
        )
        state: dict[str, Any] = {
            "blocked_ms": _ms(blocked),
            "since": time.time() - blocked,
            "location": str(innermost) if innermost is not None else None,
            "where": innermost.as_dict() if innermost is not None else None,
            "chain": stacks.chain(frames),
            "item": None,
        }
        running = _running_task(self.lifecycle)
        if running is not None:
            for n, item in enumerate(items):
                if item.task is running or item.view_task is running:
                    state["item"] = n
                    return state, (n, state)
        return state, None


def _suspects(items: list[Tracked], old_before: float) -> list[int]:
    """Positions of the work worth a closer look: told to stop (or a thread), and the
    oldest of the rest that began before ``old_before``, up to ``MAX_LOCATED`` in all."""
    flagged = [n for n, it in enumerate(items) if it.told or it.thread is not None]
    room = MAX_LOCATED - len(flagged)
    if room <= 0:
        return flagged
    marked = set(flagged)
    old = [n for n, it in enumerate(items) if it.started <= old_before and n not in marked]
    return flagged + old[:room]


def _locate(
    item: Tracked,
    detail: dict[str, Any],
    frames_by_thread: dict[int, Any],
    sync_calls: dict[int, int],
) -> None:
    """Fill in where the work is: its innermost project frame and a short chain."""
    frames, waits_thread = item.frames(frames_by_thread, sync_calls)
    if waits_thread:
        detail["wait"] = hangs.WAIT_THREAD
    innermost = stacks.innermost_project(frames)
    if innermost is not None:
        detail["location"] = str(innermost)
        detail["where"] = innermost.as_dict()
    if frames:
        detail["chain"] = stacks.chain(frames)


def _running_task(lifecycle: Lifecycle) -> Any:
    """The task the event loop runs right now (read from another thread)."""
    import asyncio

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
