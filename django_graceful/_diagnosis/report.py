"""What ``checkshutdown`` finds: every worker's snapshot and last report, read back as problems.

Only JSON is parsed, and every field is checked before it is used: a corrupt, empty,
foreign or unreadable snapshot is skipped with a one-line reason, never a traceback.
Live snapshots are classified again here (``--threshold``, and the time since they
were written); a last shutdown report says what hung when its worker stopped. A live
snapshot left by a worker that is gone (its process died, or it stopped heartbeating)
is read as that worker's last word: ``died``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .._core.registry import WorkKind
from . import hangs
from .hangs import HangKind
from .publisher import COLUMNS, FORMAT, VERSION, host_id
from .stores import LAST, LIVE, Document, Skipped, Store, StoreError, live_timeout, pid_alive

#: Exit statuses of ``checkshutdown``.
OK, PROBLEMS, CANNOT_CHECK = 0, 1, 2
#: Where a row comes from: a running worker, a last shutdown report, a worker gone silent.
SOURCE_LIVE, SOURCE_LAST, SOURCE_DIED = "live", "last", "died"


class Unreadable(Exception):
    """A stored document is not a snapshot we can read (the message says why)."""


@dataclass(slots=True)
class Worker:
    host: str
    pid: int
    server: str | None
    phase: str
    source: str
    time: float
    in_flight: int
    origin: str
    note: str | None = None


@dataclass(slots=True)
class Row:
    """One problem: a piece of work that hangs (or a frozen event loop)."""

    host: str
    pid: int
    source: str
    kind: str
    what: str
    view: str | None
    age: float
    state: str
    hang: HangKind
    location: str | None
    where: dict[str, Any] | None
    chain: list[str]
    reason: str | None
    cancelled: int
    shielded: bool
    since: float
    server: str | None = None


@dataclass(slots=True)
class Report:
    status: int
    reason: str
    rows: list[Row] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    store: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "store": self.store,
            "rows": [_fields(row) for row in self.rows],
            "workers": [_fields(worker) for worker in self.workers],
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
        }


def _fields(record: Row | Worker) -> dict[str, Any]:
    # dataclasses.asdict deep-copies: too slow for thousands of rows
    return {name: getattr(record, name) for name in record.__slots__}


def check(
    store: Store,
    *,
    threshold: float | None = None,
    pid: int | None = None,
    last_only: bool = False,
    live_only: bool = False,
    now: float | None = None,
) -> Report:
    """Read ``store`` and find the problems; never raises for what it reads."""
    now = time.time() if now is None else now
    try:
        documents, skipped = store.documents()
    except StoreError as exc:
        return Report(CANNOT_CHECK, f"cannot check: {exc}", store=store.description)
    report = Report(OK, "", skipped=list(skipped), store=store.description)
    this_host = host_id()
    parsed = []
    for document in documents:
        try:
            parsed.append((parse(document.text), document))
        except Unreadable as exc:
            report.skipped.append(Skipped(document.source, str(exc)))
    readable = len(parsed)
    reported = {
        (snapshot["host"], snapshot["pid"]): snapshot["time"]
        for snapshot, document in parsed
        if document.kind == LAST or snapshot["report"] == LAST
    }
    for snapshot, document in parsed:
        source = _source(snapshot, document, this_host, now)
        last_at = reported.get((snapshot["host"], snapshot["pid"]))
        if source == SOURCE_DIED and last_at is not None and last_at >= snapshot["started"]:
            continue  # the same worker's last report says more
        if pid is not None and snapshot["pid"] != pid:
            continue
        if (last_only and source == SOURCE_LIVE) or (live_only and source != SOURCE_LIVE):
            continue
        report.workers.append(_worker(snapshot, source, document.source, now))
        report.rows.extend(_rows(snapshot, source, now, threshold))
    report.rows.sort(key=lambda row: row.since, reverse=True)
    report.workers.sort(key=lambda w: (w.source != SOURCE_LIVE, w.host, w.pid))
    report.status, report.reason = _verdict(report, readable, pid, last_only, live_only)
    return report


def _verdict(
    report: Report, readable: int, pid: int | None, last_only: bool, live_only: bool
) -> tuple[int, str]:
    where = report.store
    if not readable:
        if report.skipped:
            return CANNOT_CHECK, (
                f"cannot check: no readable state in {where} ({len(report.skipped)} skipped)"
            )
        return CANNOT_CHECK, f"cannot check: no state found in {where}"
    if not report.workers:
        what = "last shutdown reports" if last_only else "live workers" if live_only else "state"
        of = f" of pid {pid}" if pid is not None else ""
        return CANNOT_CHECK, f"cannot check: no {what}{of} in {where}"
    live = sum(w.source == SOURCE_LIVE for w in report.workers)
    gone = len(report.workers) - live
    in_flight = sum(w.in_flight for w in report.workers if w.source == SOURCE_LIVE)
    checked = f"{live} live worker{'s' * (live != 1)}, {in_flight} in flight"
    if gone:
        checked += f"; {gone} last report{'s' * (gone != 1)}"
    if not report.rows:
        return OK, f"OK: nothing hangs ({checked})"
    kinds = Counter(row.hang for row in report.rows)
    listed = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    n = len(report.rows)
    return PROBLEMS, f"{n} problem{'s' * (n != 1)}: {listed} ({checked})"


def _source(snapshot: dict[str, Any], document: Document, this_host: str, now: float) -> str:
    if document.kind == LAST or snapshot["report"] == LAST:
        return SOURCE_LAST
    if snapshot["host"] == this_host:
        return SOURCE_LIVE if pid_alive(snapshot["pid"]) else SOURCE_DIED
    fresh = now - snapshot["time"] < live_timeout(snapshot["heartbeat"])
    return SOURCE_LIVE if fresh else SOURCE_DIED


def _worker(snapshot: dict[str, Any], source: str, origin: str, now: float) -> Worker:
    note = None
    silent = now - snapshot["time"]
    if source == SOURCE_LIVE and silent > live_timeout(snapshot["heartbeat"]):
        note = f"no heartbeat for {silent:.0f} s"
    elif source == SOURCE_DIED:
        note = f"gone without a shutdown report; last heartbeat {silent:.0f} s ago"
    return Worker(
        host=snapshot["host"],
        pid=snapshot["pid"],
        server=snapshot["server"],
        phase=snapshot["phase"],
        source=source,
        time=snapshot["time"],
        in_flight=len(snapshot["items"]["what"]),
        origin=origin,
        note=note,
    )


def _rows(snapshot: dict[str, Any], source: str, now: float, threshold: float | None) -> list[Row]:
    """The problems of one worker."""
    elapsed = max(0.0, now - snapshot["time"]) if source == SOURCE_LIVE else 0.0
    limit = snapshot["hang_threshold"] if threshold is None else threshold
    cancel_timeout = snapshot["cancel_timeout"]
    details = snapshot["details"]
    columns = snapshot["items"]
    kinds, views = snapshot["kinds"], snapshot["views"]
    loop = snapshot["loop"]
    blocked_at = loop["item"] if loop is not None else None
    at = snapshot["time"] + elapsed
    rows = []
    empty: dict[str, Any] = {}
    for n, (kind_index, age_ms) in enumerate(zip(columns["kind"], columns["age_ms"], strict=True)):
        kind = kinds[kind_index]
        age = age_ms / 1000 + elapsed
        detail = details.get(str(n), empty)
        told = detail.get("told_ms")
        told_for = None if told is None else told / 1000 + elapsed
        shielded = detail.get("shielded", False)
        hang: HangKind | None
        if source == SOURCE_LAST:
            written = detail.get("hang")
            hang = None if written is None else HangKind(written)
        elif n == blocked_at:
            hang = HangKind.BLOCKED_LOOP
        elif detail is empty and (kind != WorkKind.REQUEST or age < limit):
            continue  # the common case, without a call
        else:
            hang = hangs.classify(
                kind,
                age,
                told_for,
                shielded=shielded,
                wait=detail.get("wait"),
                threshold=limit,
                cancel_timeout=cancel_timeout,
            )
        if hang is None:
            continue
        where = detail.get("where")
        location = detail.get("location")
        chain = detail.get("chain", [])
        if hang == HangKind.BLOCKED_LOOP and loop is not None:
            where, location, chain = loop["where"], loop["location"], loop["chain"]
        cancelled = detail.get("cancelled", 0)
        rows.append(
            Row(
                host=snapshot["host"],
                pid=snapshot["pid"],
                server=snapshot["server"],
                source=source,
                kind=kind,
                what=columns["what"][n],
                view=views[columns["view"][n]],
                age=age,
                state=_state(cancelled, told_for is not None, shielded),
                hang=hang,
                location=location,
                where=where,
                chain=chain,
                reason=detail.get("reason"),
                cancelled=cancelled,
                shielded=shielded,
                since=_since(hang, at, age, told_for, limit, cancel_timeout),
            )
        )
    if loop is not None and blocked_at is None:
        blocked = loop["blocked_ms"] / 1000 + elapsed
        rows.append(
            Row(
                host=snapshot["host"],
                pid=snapshot["pid"],
                server=snapshot["server"],
                source=source,
                kind="loop",
                what="the event loop",
                view=None,
                age=blocked,
                state="blocked",
                hang=HangKind.BLOCKED_LOOP,
                location=loop["location"],
                where=loop["where"],
                chain=loop["chain"],
                reason=None,
                cancelled=0,
                shielded=False,
                since=loop["since"],
            )
        )
    return rows


def _state(cancelled: int, told: bool, shielded: bool) -> str:
    state = f"cancelled {max(cancelled, 1)}x" if cancelled or told else "running"
    return f"{state}, shielded" if shielded else state


def _since(
    hang: HangKind,
    at: float,
    age: float,
    told: float | None,
    threshold: float,
    cancel_timeout: float,
) -> float:
    """When the problem began (wall clock), to list the newest first."""
    if told is not None and hang != HangKind.SLOW:
        return at - told + cancel_timeout
    return at - age + min(threshold, age)


# -- parsing --------------------------------------------------------------------------

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
    _require(_is(data.get("host"), str) and 0 < len(data["host"]) <= 255, "host")
    _require(_is(data.get("pid"), int) and data["pid"] > 0, "pid")
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
    for table, types in (("kinds", (str,)), ("views", (str, type(None)))):
        values = data.get(table)
        _require(_is(values, list) and all(type(v) in types for v in values), table)
    items = data.get("items")
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
    details = data.get("details")
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
    return _is(value, int | float) and math.isfinite(value)


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


# -- showing --------------------------------------------------------------------------

HEADERS = ("HOST", "PID", "SOURCE", "KIND", "WHAT", "AGE", "STATE", "HANG", "LOCATION")
#: Longest text shown in a table cell (the JSON has all of it).
CELL_WIDTH = 70


def table(report: Report) -> str:
    """The rows as a plain-text table (no colours), with a header line."""
    cells = [HEADERS] + [
        (
            row.host,
            str(row.pid),
            row.source,
            row.kind,
            _what(row),
            f"{row.age:.1f} s",
            row.state,
            row.hang,
            row.location or "?",
        )
        for row in report.rows
    ]
    cells = [tuple(_printable(cell) for cell in line) for line in cells]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _what(row: Row) -> str:
    return f"{row.view} ({row.what})" if row.view else row.what


def _printable(text: str, width: int = CELL_WIDTH) -> str:
    """One line without control characters (a path or a snapshot may hold any)."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= width else text[: width - 1] + "…"


def notes(report: Report) -> list[str]:
    """One line per skipped document and per worker that needs a word."""
    wide = 1000
    lines = [
        f"skipped {_printable(s.source, wide)}: {_printable(s.reason, wide)}"
        for s in report.skipped
    ]
    lines += [
        f"{_printable(w.host, wide)} pid {w.pid}: {w.note}"
        for w in report.workers
        if w.note is not None
    ]
    return lines
