"""The hang kinds, and the one rule that names what a piece of work is stuck on.

A worker applies it to its own work (to send ``hang_detected``); ``checkshutdown``
applies it again to a snapshot, with its own ``--threshold`` and the time since.

- ``blocked-loop``: the event loop has not answered for more than a second (the work
  running in it when it froze is named, with the loop thread's stack);
- work *told to stop* (a client disconnect, a timeout, a shutdown cancel; for a
  ``start_thread`` thread, its stop event) and still running ``CANCEL_TIMEOUT`` later:
  ``stuck-thread`` (a ``start_thread`` thread), ``sync-thread`` (a task awaiting a sync
  thread, e.g. a sync view, that keeps running), ``shield-overrun`` (a ``shield()``
  still holds the cancel back), else ``swallowed-cancel`` (the code caught the cancel
  and went on);
- a request running past ``HANG_THRESHOLD`` without being told to stop: ``sync-thread``
  if it waits for a sync thread, else ``slow``. Websockets, spawned tasks and threads
  may run for as long as the process does: age alone never makes them hang;
- ``lost``: work in flight when its worker was last seen, the worker gone without a
  shutdown report (killed, crashed, or its report could not be written). Only a reader
  names it, from the worker's last snapshot: ``classify`` never does.
"""

from __future__ import annotations

import enum

from .._core.registry import WorkKind


class HangKind(enum.StrEnum):
    """What a piece of work is stuck on (also its name in snapshots and reports)."""

    SLOW = "slow"
    SWALLOWED_CANCEL = "swallowed-cancel"
    SHIELD_OVERRUN = "shield-overrun"
    BLOCKED_LOOP = "blocked-loop"
    SYNC_THREAD = "sync-thread"
    STUCK_THREAD = "stuck-thread"
    LOST = "lost"


#: Seconds without an answer from the event loop after which it counts as blocked.
BLOCKED_AFTER = 1.0
#: What a task waits for when it awaits a sync thread (a snapshot's ``wait``).
WAIT_THREAD = "thread"


def classify(
    kind: str,
    age: float,
    told: float | None,
    *,
    shielded: bool = False,
    wait: str | None = None,
    threshold: float,
    cancel_timeout: float,
) -> HangKind | None:
    """The hang kind of one piece of work, or None while it is fine.

    ``kind``: a :class:`WorkKind` (or its value, read back from a snapshot); ``age``:
    seconds it has run; ``told``: seconds since it was told to stop (None if it was
    not); ``wait``: ``"thread"`` when it awaits a sync thread that still runs.
    """
    if told is not None and told >= cancel_timeout:
        if kind == WorkKind.THREAD:
            return HangKind.STUCK_THREAD
        if wait == WAIT_THREAD:
            return HangKind.SYNC_THREAD
        if shielded:
            return HangKind.SHIELD_OVERRUN
        return HangKind.SWALLOWED_CANCEL
    if kind == WorkKind.REQUEST and age >= threshold:
        return HangKind.SYNC_THREAD if wait == WAIT_THREAD else HangKind.SLOW
    return None
