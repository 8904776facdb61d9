"""The snapshot format: what a worker says about its in-flight work, built and read back.

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

:func:`build` makes one from a worker's tracked work (the heartbeat in
:mod:`.publisher` writes it); :func:`parse` reads one back and checks every field
before anyone uses it (``checkshutdown``, the drill).
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._core import stacks
from .._core.registry import Tracked
from ..conf import GracefulSettings
from .hangs import WAIT_THREAD, HangKind, classify
from .stores import LAST, LIVE

FORMAT = "django_graceful.snapshot"
#: The most characters of ``ended``: why the lifecycle ended the process itself (in a
#: last report the watchdog, or another last resort, wrote again).
MAX_ENDED = 2000
VERSION = 1
#: Columns of ``items``: ``kind`` and ``view`` index the ``kinds`` and ``views`` lists.
COLUMNS = ("kind", "what", "view", "age_ms")
#: Work younger than this that nobody told to stop is listed without its location.
LOCATE_AFTER = 1.0
#: Most items located in one live snapshot (told-to-stop first, then the oldest).
MAX_LOCATED = 200
#: Most items located in a last shutdown report.
MAX_LOCATED_LAST = 2000


def host_id() -> str:
    """This host's name in snapshots: ``GRACEFUL_HOST_ID`` if set, else the host name."""
    return os.environ.get("GRACEFUL_HOST_ID") or socket.gethostname()


@functools.cache
def machine_id() -> str:
    """Where a pid means this process table: this boot of the kernel (``boot_id``) and
    this pid namespace (a container has its own). Snapshots carry it, so that a reader
    on the same machine asks the process table, whatever the writer's host id."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot = file.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return f"host:{socket.gethostname()}"
    return f"{boot}:{namespace}"


class Unreadable(Exception):
    """A stored document is not a snapshot we can read (the message says why)."""


# -- building -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The worker that writes a snapshot, as the document names it."""

    host: str
    pid: int
    server: str | None
    phase: str
    started: float
    budget: float


@dataclass(frozen=True, slots=True)
class FrozenLoop:
    """An event loop that does not answer: for how long, its thread, the task it runs."""

    blocked_for: float
    thread: int
    running: Any = None


class FoundHang(NamedTuple):
    """A hang found in a snapshot: the work (None: the event loop), its kind, where it
    is, and the key it keeps from one snapshot to the next."""

    item: Tracked | None
    kind: HangKind
    location: str | None
    key: Any


def build(
    items: list[Tracked],
    header: Header,
    settings: GracefulSettings,
    *,
    now: float,
    wall: float,
    told: Callable[[Tracked], float | None],
    frozen: FrozenLoop | None = None,
    last: bool = False,
) -> tuple[dict[str, Any], list[FoundHang]]:
    """The snapshot of ``items`` (in the order the work began), and the hangs found in it.

    ``now``: monotonic time (the items' clock); ``wall``: Unix time; ``told(item)``:
    seconds since the item was told to stop, or None; ``frozen``: the event loop, if it
    does not answer. ``last``: the last shutdown report (every item located, and
    anything still running hangs; ``frozen`` is not looked at).
    """
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
    loop: dict[str, Any] | None = None
    blocked: tuple[int, dict[str, Any]] | None = None
    if frozen is not None and not last:
        loop, blocked = _loop_state(frozen, items, wall)
    details, found = _details(
        items, picked, now, told, threshold, cancel_timeout, last=last, blocked=blocked
    )
    if loop is not None and blocked is None:
        key = ("loop", loop["since"])
        found.append(FoundHang(None, HangKind.BLOCKED_LOOP, loop["location"], key))
    document = {
        "format": FORMAT,
        "version": VERSION,
        "report": LAST if last else LIVE,
        "host": header.host,
        "pid": header.pid,
        "machine": machine_id(),
        "server": header.server,
        "phase": header.phase,
        "time": wall,
        "started": header.started,
        "heartbeat": settings.HEARTBEAT,
        "hang_threshold": settings.HANG_THRESHOLD,
        "cancel_timeout": settings.CANCEL_TIMEOUT,
        "budget": header.budget,
        "loop": loop,
        "kinds": list(kinds),
        "views": list(views),
        "items": columns,
        "details": details,
    }
    return document, found


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _details(
    items: list[Tracked],
    picked: list[int],
    now: float,
    told: Callable[[Tracked], float | None],
    threshold: float,
    cancel_timeout: float,
    *,
    last: bool,
    blocked: tuple[int, dict[str, Any]] | None,
) -> tuple[dict[str, dict[str, Any]], list[FoundHang]]:
    """A closer look at the ``picked`` items (by position): why and since when they
    were told to stop, where they are (the first ``MAX_LOCATED``), their hang."""
    cap = MAX_LOCATED_LAST if last else MAX_LOCATED
    told_for_item = {n: told(items[n]) for n in picked}
    if len(picked) > cap:  # locate those told to stop longest ago, then the oldest
        picked = sorted(
            picked, key=lambda n: (told_for_item[n] is None, -(told_for_item[n] or 0.0), n)
        )
    frames_by_thread: dict[int, Any] | None = None
    sync_calls: dict[int, int] = {}
    details: dict[str, dict[str, Any]] = {}
    found: list[FoundHang] = []
    for rank, n in enumerate(picked):
        item = items[n]
        detail: dict[str, Any] = {}
        reason = item.stop_reason
        if reason is not None:
            detail["reason"] = str(reason)
        if item.cancel_count:
            detail["cancelled"] = item.cancel_count
        told_for = told_for_item[n]
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
            hang = classify(
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
            found.append(FoundHang(item, hang, detail.get("location"), item.id))
        details[str(n)] = detail
    return details, found


def _loop_state(
    frozen: FrozenLoop, items: list[Tracked], wall: float
) -> tuple[dict[str, Any], tuple[int, dict[str, Any]] | None]:
    """The frozen loop: for how long, its thread's stack, and the work it runs (its
    position and the loop, if it is one of ``items``)."""
    frame = stacks.thread_frames().get(frozen.thread)
    frames = stacks.stack(frame)
    innermost = stacks.innermost_project(frames) or (stacks.where(frames[-1]) if frames else None)
    state: dict[str, Any] = {
        "blocked_ms": _ms(frozen.blocked_for),
        "since": wall - frozen.blocked_for,
        "location": str(innermost) if innermost is not None else None,
        "where": innermost.as_dict() if innermost is not None else None,
        "chain": stacks.chain(frames),
        "item": None,
    }
    running = frozen.running
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
        detail["wait"] = WAIT_THREAD
    innermost = stacks.innermost_project(frames)
    if innermost is not None:
        detail["location"] = str(innermost)
        detail["where"] = innermost.as_dict()
    if frames:
        detail["chain"] = stacks.chain(frames)


# -- reading --------------------------------------------------------------------------

_DETAIL_TYPES: dict[str, type | tuple[type, ...]] = {
    "reason": str,
    "cancelled": int,
    "told_ms": int,
    "shielded": bool,
    "wait": str,
    "location": str,
    "where": dict,
    "chain": list,
    "hang": str,
}
_COLUMN_TYPES: dict[str, type] = {"kind": int, "what": str, "view": int, "age_ms": int}


def parse(text: str) -> dict[str, Any]:
    """A snapshot from its JSON text, checked field by field.

    Raises :class:`Unreadable` with a one-line reason.
    """
    if not text.strip():
        raise Unreadable("empty file")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"not JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise Unreadable("not a django_graceful snapshot")
    if data.get("version") != VERSION:
        raise Unreadable(
            f"snapshot format {data.get('version')!r} (this django_graceful reads {VERSION})"
        )
    try:
        _check_snapshot(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise Unreadable(f"malformed snapshot: {_first_line(exc)}") from None
    return data


def _check_snapshot(data: dict[str, Any]) -> None:
    _require(data.get("report") in (LIVE, LAST), "report")
    _require(
        "ended" not in data or (_is(data["ended"], str) and len(data["ended"]) <= MAX_ENDED),
        "ended",
    )
    _require(_is(data.get("host"), str) and 0 < len(data["host"]) <= 255, "host")
    _require(_is(data.get("pid"), int) and data["pid"] > 0, "pid")
    _require("machine" not in data or _is(data["machine"], str), "machine")
    _require(data.get("server") is None or _is(data["server"], str), "server")
    _require(_is(data.get("phase"), str), "phase")
    for key in ("time", "started", "heartbeat", "hang_threshold", "cancel_timeout"):
        _require(_number(data.get(key)) and data[key] >= 0, key)
    _require("budget" not in data or (_number(data["budget"]) and data["budget"] >= 0), "budget")
    loop = data.get("loop")
    if loop is not None:
        _require(_is(loop, dict), "loop")
        _require(_is(loop.get("blocked_ms"), int), "loop.blocked_ms")
        _require(_number(loop.get("since")), "loop.since")
        _require(loop.get("item") is None or _is(loop["item"], int), "loop.item")
        for key in ("location", "where", "chain"):
            _require(key in loop, f"loop.{key}")
        _require(loop.get("location") is None or _is(loop["location"], str), "loop.location")
        _require(loop.get("where") is None or _where(loop["where"]), "loop.where")
        _require(_strings(loop.get("chain")), "loop.chain")
    values: Any
    for table, types in (("kinds", (str,)), ("views", (str, type(None)))):
        values = data.get(table)
        _require(_is(values, list) and all(type(v) in types for v in values), table)
    items: Any = data.get("items")
    _require(_is(items, dict), "items")
    length = None
    for column in COLUMNS:
        values = items.get(column)
        _require(_is(values, list), f"items.{column}")
        if length is None:
            length = len(values)
        _require(len(values) == length, f"items.{column} (length)")
        _require(all(type(v) is _COLUMN_TYPES[column] for v in values), f"items.{column}")
    for column, table in (("kind", "kinds"), ("view", "views")):
        size = len(data[table])
        _require(all(0 <= v < size for v in items[column]), f"items.{column} (index)")
    if loop is not None and loop["item"] is not None:
        _require(0 <= loop["item"] < (length or 0), "loop.item (index)")
    details: Any = data.get("details")
    _require(_is(details, dict), "details")
    for key, detail in details.items():
        _require(key.isdigit() and int(key) < (length or 0), f"details key {key[:20]!r}")
        _require(_is(detail, dict), f"details.{key}")
        for name, value in detail.items():
            expected = _DETAIL_TYPES.get(name)
            _require(expected is None or _is(value, expected), f"details.{key}.{name}")
        _require(detail.get("hang") in (None, *HangKind), f"details.{key}.hang")
        _require("where" not in detail or _where(detail["where"]), f"details.{key}.where")
        _require("chain" not in detail or _strings(detail["chain"]), f"details.{key}.chain")


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"bad {what}")


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, kind)


def _number(value: Any) -> bool:
    return _is(value, (int, float)) and math.isfinite(value)


def _strings(value: Any) -> bool:
    return _is(value, list) and all(_is(v, str) for v in value)


def _where(value: Any) -> bool:
    return (
        _is(value, dict)
        and _is(value.get("file"), str)
        and _is(value.get("line"), int)
        and _is(value.get("function"), str)
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
