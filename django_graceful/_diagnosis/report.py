"""What ``checkshutdown`` finds: every worker's snapshot and last report, read back as problems.

Each document is read with :func:`.snapshot.parse`: a corrupt, empty, foreign or
unreadable snapshot is skipped with a one-line reason, never a traceback. Live
snapshots are classified again here (``--threshold``, and the time since they were
written); a last shutdown report says what hung when its worker stopped. A live
snapshot left by a worker that is gone (its process died, or it stopped heartbeating)
is read as that worker's last word: ``died``; on this machine (the same process table,
whatever the host id) as soon as its process is gone, and also once a new worker has
kept it as the dead one's last report (``FileStore.tidy``). A worker that died is
never OK: each piece of work it held when last seen is a problem (``lost``, unless it
already hung), said first in the verdict with the worker's pid and when it was last
seen; one that held nothing is unknown (what it did after its last heartbeat, its
shutdown's report, is missing), exit status 2 unless problems were found. A dead
worker of an interrupted ``checkshutdown --drill``, and one silent for longer than
``LAST_TTL``, are skipped with a one-line reason: nobody will write their last report
any more.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .._core.registry import WorkKind
from .hangs import HangKind, classify
from .render import printable
from .render import table as render_table
from .snapshot import MAX_ENDED, Unreadable, host_id, machine_id, parse
from .status import CANNOT_CHECK, OK, PROBLEMS
from .stores import (
    DRILL_HOST,
    LAST,
    LAST_TTL,
    Document,
    Skipped,
    Store,
    StoreError,
    live_timeout,
    pid_alive,
)

#: Where a row comes from: a running worker, a last shutdown report, a worker gone silent.
SOURCE_LIVE, SOURCE_LAST, SOURCE_DIED = "live", "last", "died"
#: The kind of a row for a frozen event loop that runs none of the tracked work.
LOOP_KIND = "loop"


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
    #: Why the lifecycle ended the process itself (the watchdog, another last resort).
    ended: str | None = None


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
    #: How many times the work was cancelled (``"cancelled"`` in the JSON).
    cancel_count: int
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


#: Fields whose JSON key is not their name.
_JSON_KEYS = {"cancel_count": "cancelled"}


def _fields(record: Row | Worker) -> dict[str, Any]:
    # dataclasses.asdict deep-copies: too slow for thousands of rows
    return {_JSON_KEYS.get(name, name): getattr(record, name) for name in record.__slots__}


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
        for snapshot, _ in parsed
        if snapshot["report"] == LAST  # written by the worker (not a dead one's, kept)
    }
    for snapshot, document in parsed:
        source = _source(snapshot, document, this_host, now)
        last_at = reported.get((snapshot["host"], snapshot["pid"]))
        if source == SOURCE_DIED and last_at is not None and last_at >= snapshot["started"]:
            continue  # the same worker's last report says more
        if source == SOURCE_LAST and _other_drill(snapshot, this_host):
            report.skipped.append(Skipped(document.source, DRILL_LEFTOVER))
            continue
        if source == SOURCE_DIED and (stale := _stale(snapshot, now, this_host)) is not None:
            report.skipped.append(Skipped(document.source, stale))
            continue
        if pid is not None and snapshot["pid"] != pid:
            continue
        # a worker that died is news in every mode: its live snapshot is its last word
        if (last_only and source == SOURCE_LIVE) or (live_only and source == SOURCE_LAST):
            continue
        report.workers.append(_worker(snapshot, source, document.source, now))
        report.rows.extend(_rows(snapshot, source, now, threshold))
    report.rows.sort(key=lambda row: row.since, reverse=True)
    report.workers.sort(key=lambda w: (w.source != SOURCE_LIVE, w.host, w.pid))
    report.status, report.reason = _verdict(report, readable, pid, last_only, live_only, now)
    return report


def _verdict(
    report: Report,
    readable: int,
    pid: int | None,
    last_only: bool,
    live_only: bool,
    now: float,
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
    sources = Counter(w.source for w in report.workers)
    live = sources[SOURCE_LIVE]
    in_flight = sum(w.in_flight for w in report.workers if w.source == SOURCE_LIVE)
    checked = f"{live} live worker{'s' * (live != 1)}, {in_flight} in flight"
    if gone := sources[SOURCE_LAST]:
        checked += f"; {gone} last report{'s' * (gone != 1)}"
    if died := sources[SOURCE_DIED]:
        checked += f"; {died} died"
    dead = [w for w in report.workers if w.source == SOURCE_DIED]
    unknown = [_unknown(w, now) for w in dead if not w.in_flight]
    ended = [
        f"worker {w.pid} on {printable(w.host)}: {printable(w.ended, MAX_ENDED)}"
        for w in report.workers
        if w.ended
    ]
    if not report.rows:
        if ended:
            return PROBLEMS, "; ".join([*ended, *unknown, f"nothing else hangs ({checked})"])
        if unknown:
            return CANNOT_CHECK, f"cannot check: {'; '.join(unknown)} ({checked})"
        return OK, f"OK: nothing hangs ({checked})"
    kinds = Counter(row.hang for row in report.rows)
    listed = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    n = len(report.rows)
    problems = f"{n} problem{'s' * (n != 1)}: {listed} ({checked})"
    lost = [_died(w, report.rows, now) for w in dead if w.in_flight]
    return PROBLEMS, "; ".join([*ended, *lost, problems, *unknown])


def _died(worker: Worker, rows: list[Row], now: float) -> str:
    """The loudest words: a worker gone with work in flight, what it held, when seen."""
    held = Counter(
        row.kind
        for row in rows
        if (row.host, row.pid, row.source) == (worker.host, worker.pid, SOURCE_DIED)
        and row.kind != LOOP_KIND  # a frozen loop is not work it held
    )
    what = ", ".join(f"{n} {kind}{'s' * (n != 1)}" for kind, n in held.most_common())
    return (
        f"worker {worker.pid} on {printable(worker.host)} died with {worker.in_flight} in "
        f"flight ({what}), last seen {_seen(worker.time, now)}"
    )


def _unknown(worker: Worker, now: float) -> str:
    return (
        f"worker {worker.pid} on {printable(worker.host)} ended without a shutdown report, "
        f"nothing in flight when last seen {_seen(worker.time, now)}: what it did after "
        "is unknown"
    )


def _seen(when: float, now: float) -> str:
    """``12 s ago (2026-12-07 03:50:01 UTC)``."""
    ago = max(0.0, now - when)
    span = (
        f"{ago:.0f} s"
        if ago < 120
        else f"{ago / 60:.0f} min"
        if ago < 7200
        else f"{ago / 3600:.0f} h"
    )
    return f"{span} ago ({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(when))})"


#: Why the files of a drill that did not tidy up after itself are skipped.
DRILL_LEFTOVER = "left by an interrupted checkshutdown --drill (its server is gone)"


def _other_drill(snapshot: dict[str, Any], this_host: str) -> bool:
    """A drill's worker, read by anyone but that drill (an interrupted drill's server
    stops on its own and leaves its last report)."""
    return snapshot["host"].startswith(DRILL_HOST) and snapshot["host"] != this_host


def _stale(snapshot: dict[str, Any], now: float, this_host: str) -> str | None:
    """Why a dead worker's live snapshot is no longer worth reporting, or None (a drill
    reads its own killed worker's: its last word)."""
    if _other_drill(snapshot, this_host):
        return DRILL_LEFTOVER
    if now - snapshot["time"] > LAST_TTL:
        return f"a dead worker's, silent for more than {LAST_TTL / 3600:.0f} h"
    return None


def _source(snapshot: dict[str, Any], document: Document, this_host: str, now: float) -> str:
    if snapshot["report"] == LAST:
        return SOURCE_LAST
    if document.kind == LAST:
        return SOURCE_DIED  # a dead worker's live snapshot, kept by a new worker
    if snapshot["host"] == this_host or snapshot.get("machine") == machine_id():
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
    ended = snapshot.get("ended")
    if ended is not None:
        note = ended
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
        ended=ended,
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
    died = source == SOURCE_DIED
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
        elif detail is empty and (kind != WorkKind.REQUEST or age < limit) and not died:
            continue  # the common case, without a call
        else:
            hang = classify(
                kind,
                age,
                told_for,
                shielded=shielded,
                wait=detail.get("wait"),
                threshold=limit,
                cancel_timeout=cancel_timeout,
            )
        if hang is None and died:
            hang = HangKind.LOST  # it was in flight when its worker was last seen
        if hang is None:
            continue
        where = detail.get("where")
        location = detail.get("location")
        chain = detail.get("chain", [])
        if hang == HangKind.BLOCKED_LOOP and loop is not None:
            where, location, chain = loop["where"], loop["location"], loop["chain"]
        cancel_count = detail.get("cancelled", 0)
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
                state=_state(cancel_count, told_for is not None, shielded),
                hang=hang,
                location=location,
                where=where,
                chain=chain,
                reason=detail.get("reason"),
                cancel_count=cancel_count,
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
                kind=LOOP_KIND,
                what="the event loop",
                view=None,
                age=blocked,
                state="blocked",
                hang=HangKind.BLOCKED_LOOP,
                location=loop["location"],
                where=loop["where"],
                chain=loop["chain"],
                reason=None,
                cancel_count=0,
                shielded=False,
                since=loop["since"],
            )
        )
    return rows


def _state(cancel_count: int, told: bool, shielded: bool) -> str:
    state = f"cancelled {max(cancel_count, 1)}x" if cancel_count or told else "running"
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
    if hang == HangKind.LOST:
        return at  # when its worker was last seen
    if told is not None and hang != HangKind.SLOW:
        return at - told + cancel_timeout
    return at - age + min(threshold, age)


# -- showing --------------------------------------------------------------------------

HEADERS = ("HOST", "PID", "SOURCE", "KIND", "WHAT", "AGE", "STATE", "HANG", "LOCATION")


def table(report: Report) -> str:
    """The rows as a plain-text table (no colours), with a header line."""
    return render_table(
        HEADERS,
        (
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
        ),
    )


def _what(row: Row) -> str:
    return f"{row.view} ({row.what})" if row.view else row.what


def notes(report: Report) -> list[str]:
    """One line per skipped document and per worker that needs a word."""
    wide = 1000
    lines = [
        f"skipped {printable(s.source, wide)}: {printable(s.reason, wide)}" for s in report.skipped
    ]
    lines += [
        f"{printable(w.host, wide)} pid {w.pid}: {w.note}"
        for w in report.workers
        if w.note is not None
    ]
    return lines
