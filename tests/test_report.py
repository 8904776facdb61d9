"""Reading snapshots back: parsing that never tracebacks, re-classifying, exits, the command."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.registry import Tracked
from django_graceful._diagnosis import report
from django_graceful._diagnosis.hangs import HangKind
from django_graceful._diagnosis.publisher import Publisher
from django_graceful._diagnosis.snapshot import FORMAT, Unreadable, host_id, machine_id, parse
from django_graceful._diagnosis.stores import FileStore

from .inprocess import NO_SIGNALS

NOW = 1_800_000_000.0
ME = os.getpid()


def snapshot(work: list[tuple[str, str, str | None, int]] = (), **fields: Any) -> dict[str, Any]:
    """A snapshot document; ``work``: its items as ``(kind, what, view, age_ms)``."""
    kinds = sorted({row[0] for row in work})
    views = [None, *sorted({row[2] for row in work if row[2] is not None})]
    document = {
        "format": FORMAT,
        "version": 1,
        "report": "live",
        "host": host_id(),
        "pid": ME,
        "server": "uvicorn",
        "phase": "serving",
        "time": NOW,
        "started": NOW - 100,
        "heartbeat": 1.0,
        "hang_threshold": 30.0,
        "cancel_timeout": 5.0,
        "loop": None,
        "kinds": kinds,
        "views": views,
        "items": {
            "kind": [kinds.index(row[0]) for row in work],
            "what": [row[1] for row in work],
            "view": [views.index(row[2]) for row in work],
            "age_ms": [row[3] for row in work],
        },
        "details": {},
    }
    document.update(fields)
    return document


ONE = snapshot([("request", "GET /", None, 5)])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def folder_with(tmp_path: Path, *documents: dict[str, Any], name: str = "live") -> FileStore:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for n, document in enumerate(documents):
        kind = "last" if document.get("report") == "last" else name
        (folder / f"{kind}-h-{document.get('pid', n)}.json").write_text(json.dumps(document))
    return FileStore(str(folder))


# -- parsing --------------------------------------------------------------------------


UNUSABLE = [
    ("", "empty file"),
    ("  \n", "empty file"),
    ("{", "not JSON"),
    ("[" * 100_000, "not JSON"),
    ("[1, 2]", "not a django_graceful snapshot"),
    ('{"format": "someone.else"}', "not a django_graceful snapshot"),
    (json.dumps(snapshot(version=2)), "snapshot format 2 (this django_graceful reads 1)"),
    (json.dumps(snapshot(pid="12")), "malformed snapshot: bad pid"),
    (json.dumps(snapshot(pid=True)), "malformed snapshot: bad pid"),
    (json.dumps(snapshot(host="")), "malformed snapshot: bad host"),
    (json.dumps(snapshot(report="other")), "malformed snapshot: bad report"),
    (json.dumps(snapshot(time=float("nan"))), "malformed snapshot: bad time"),
    (json.dumps(snapshot(items=[])), "malformed snapshot: bad items"),
    (json.dumps(snapshot(items={"what": ["GET /"]})), "malformed snapshot: bad items.kind"),
    (json.dumps(snapshot(kinds="request")), "malformed snapshot: bad kinds"),
    (json.dumps(snapshot(views=[1])), "malformed snapshot: bad views"),
    (
        json.dumps({**ONE, "items": {**ONE["items"], "what": []}}),
        "malformed snapshot: bad items.what (length)",
    ),
    (
        json.dumps({**ONE, "items": {**ONE["items"], "view": [7]}}),
        "malformed snapshot: bad items.view (index)",
    ),
    (json.dumps({**ONE, "details": {"1": {}}}), "bad details key '1'"),
    (json.dumps({**ONE, "details": {"x": {}}}), "bad details key 'x'"),
    (
        json.dumps(snapshot(work=[("request", "GET /", None, "5")])),
        "malformed snapshot: bad items.age_ms",
    ),
    (json.dumps({**ONE, "details": {"0": {"hang": "bored"}}}), "bad details.0.hang"),
    (json.dumps({**ONE, "details": {"0": {"told_ms": 1.5}}}), "bad details.0.told_ms"),
    (json.dumps({**ONE, "details": {"0": {"where": {"file": 1}}}}), "bad details.0.where"),
    (json.dumps({**ONE, "details": {"0": []}}), "bad details.0"),
    (json.dumps(snapshot(loop={"blocked_ms": 5})), "bad loop.since"),
]


# Named by number and reason: the documents hold this process's pid, and each pytest-xdist
# worker must collect the same ids.
@pytest.mark.parametrize(
    ("text", "reason"), UNUSABLE, ids=[f"{n}-{reason}" for n, (_, reason) in enumerate(UNUSABLE)]
)
def test_an_unusable_document_gets_a_one_line_reason(text: str, reason: str) -> None:
    with pytest.raises(Unreadable) as caught:
        parse(text)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


async def test_a_published_snapshot_parses(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "LIFESPAN": []}
    lifecycle.loop = asyncio.get_running_loop()
    release = asyncio.Event()
    task = asyncio.ensure_future(release.wait())
    item = lifecycle.registry.add(Tracked("request", "GET /x/", task=task, view="app.x"))
    item.started -= 2
    pub = Publisher(lifecycle, FileStore(str(tmp_path / "state"), host_id(), ME))
    pub.store.prepare()
    document = pub.publish()
    assert document is not None
    parsed = parse(json.dumps(document))
    assert parsed["views"] == ["app.x"] and parsed["items"]["view"] == [0]
    assert list(parsed["details"]) == ["0"]
    release.set()
    await task


# -- what check() finds ---------------------------------------------------------------


def test_no_folder_means_no_state(tmp_path: Path) -> None:
    checked = report.check(FileStore(str(tmp_path / "missing")))
    assert checked.status == report.CANNOT_CHECK
    assert checked.reason == f"cannot check: no state found: {tmp_path / 'missing'} does not exist"


def test_an_empty_folder_means_no_state(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not ours, not looked at")
    checked = report.check(FileStore(str(tmp_path)))
    assert (checked.status, checked.reason) == (
        2,
        f"cannot check: no state found in folder {tmp_path}",
    )


def test_a_folder_that_is_a_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    checked = report.check(FileStore(str(tmp_path / "state")))
    assert (checked.status, checked.reason) == (
        2,
        f"cannot check: {tmp_path / 'state'} is not a folder",
    )


def test_bad_files_are_skipped_and_the_good_ones_read(tmp_path: Path) -> None:
    store = folder_with(tmp_path, snapshot())
    folder = tmp_path / "state"
    (folder / "live-h-2.json").write_text("")
    (folder / "live-h-3.json").write_text("{corrupt")
    (folder / "live-h-4.json").write_text('{"format": "other"}')
    (folder / "live-h-5.json").mkdir()
    (folder / "live-h-6.json").symlink_to(folder / f"live-h-{ME}.json")
    (folder / "live-h-7.json").write_bytes(b"\xff\xfe")

    checked = report.check(store)

    assert checked.status == report.OK
    assert checked.reason == "OK: nothing hangs (1 live worker, 0 in flight)"
    reasons = {Path(s.source).name: s.reason for s in checked.skipped}
    assert reasons["live-h-2.json"] == "empty file"
    assert reasons["live-h-3.json"].startswith("not JSON")
    assert reasons["live-h-4.json"] == "not a django_graceful snapshot"
    assert reasons["live-h-5.json"] == "unreadable: Is a directory"
    assert reasons["live-h-6.json"].startswith("unreadable:")  # a symlink is not followed
    assert reasons["live-h-7.json"].startswith("unreadable:")
    assert all("\n" not in line for line in report.notes(checked))


def test_only_bad_files_cannot_be_checked(tmp_path: Path) -> None:
    (tmp_path / "live-h-1.json").write_text("{corrupt")
    checked = report.check(FileStore(str(tmp_path)))
    assert checked.status == 2
    assert checked.reason == f"cannot check: no readable state in folder {tmp_path} (1 skipped)"


def test_the_threshold_is_the_workers_unless_given(tmp_path: Path) -> None:
    store = folder_with(
        tmp_path,
        snapshot(
            time=time.time(),
            work=[("request", "GET /a/", "app.a", 5000), ("task", "t", None, 9_000_000)],
        ),
    )
    assert report.check(store).status == report.OK
    checked = report.check(store, threshold=2)
    assert checked.status == report.PROBLEMS
    (row,) = checked.rows
    assert (row.hang, row.view, row.what, row.state) == (
        HangKind.SLOW,
        "app.a",
        "GET /a/",
        "running",
    )
    assert row.location is None  # young work is listed without a location


def test_a_live_snapshot_is_aged_by_the_time_since_it_was_written(tmp_path: Path) -> None:
    written = time.time() - 3
    told = {"0": {"told_ms": 2500, "reason": "disconnect", "location": "app/views.py:9 in x"}}
    document = snapshot(time=written, work=[("request", "GET /x/", None, 2600)], details=told)
    checked = report.check(folder_with(tmp_path, document))
    (row,) = checked.rows
    assert row.hang == HangKind.SWALLOWED_CANCEL and row.source == "live"
    assert row.state == "cancelled 1x" and row.reason == "disconnect"
    assert row.location == "app/views.py:9 in x" and row.age == pytest.approx(5.6, abs=0.5)

    # the same snapshot left by a process that is gone: read as it was when written
    gone = folder_with(tmp_path / "gone", {**document, "pid": dead_pid()})
    checked = report.check(gone)
    assert checked.workers[0].source == "died"
    assert "gone without a shutdown report" in (checked.workers[0].note or "")
    (row,) = checked.rows
    assert (row.source, row.hang, row.state) == ("died", HangKind.LOST, "cancelled 1x")
    assert row.age == pytest.approx(2.6)


def test_another_hosts_snapshot_is_live_while_it_heartbeats(tmp_path: Path) -> None:
    fresh = snapshot(host="elsewhere", pid=1, time=time.time())
    stale = snapshot(host="elsewhere", pid=2, time=time.time() - 60)
    checked = report.check(folder_with(tmp_path, fresh, stale))
    assert {(w.pid, w.source) for w in checked.workers} == {(1, "live"), (2, "died")}


def last_report(pid: int, hang: str = HangKind.SWALLOWED_CANCEL) -> dict[str, Any]:
    return snapshot(
        report="last",
        pid=pid,
        phase="reporting",
        time=time.time() - 3600,
        work=[("request", "GET /stuck/", "app.stuck", 7000)],
        details={"0": {"hang": hang, "told_ms": 5000, "reason": "shutdown", "cancelled": 3}},
    )


def test_last_reports_and_live_workers_by_mode(tmp_path: Path) -> None:
    live = snapshot(time=time.time(), work=[("request", "GET /a/", None, 60_000)])
    store = folder_with(tmp_path, live, last_report(dead_pid()))

    both = report.check(store)
    assert [row.source for row in both.rows] == ["live", "last"]
    assert (
        both.reason
        == "2 problems: 1 slow, 1 swallowed-cancel (1 live worker, 1 in flight; 1 last report)"
    )
    last = report.check(store, last_only=True)
    (row,) = last.rows
    assert (row.source, row.state, row.view) == ("last", "cancelled 3x", "app.stuck")
    live_only = report.check(store, live_only=True)
    assert [row.source for row in live_only.rows] == ["live"]


def test_last_only_without_reports_cannot_check(tmp_path: Path) -> None:
    checked = report.check(folder_with(tmp_path, snapshot(time=time.time())), last_only=True)
    assert checked.status == 2 and checked.reason.startswith(
        "cannot check: no last shutdown reports"
    )


def test_a_pid_filter(tmp_path: Path) -> None:
    other = dead_pid()
    store = folder_with(tmp_path, snapshot(time=time.time()), last_report(other))
    assert [w.pid for w in report.check(store, pid=other).workers] == [other]
    checked = report.check(store, pid=1)
    assert checked.status == 2 and checked.reason.startswith("cannot check: no state of pid 1")


def test_newest_problems_first(tmp_path: Path) -> None:
    now = time.time()
    work = [
        ("request", "GET /old/", None, 100_000),
        ("request", "GET /new/", None, 40_000),
        ("request", "GET /told/", None, 50_000),
    ]
    details = {"2": {"told_ms": 6000}}
    checked = report.check(folder_with(tmp_path, snapshot(work, time=now, details=details)))
    # slow since 70 s and 10 s ago; swallowed the cancel since 1 s ago
    assert [row.what for row in checked.rows] == ["GET /told/", "GET /new/", "GET /old/"]


def test_a_blocked_loop_names_the_work_in_it_or_the_loop(tmp_path: Path) -> None:
    now = time.time()
    loop = {
        "blocked_ms": 2500,
        "since": now - 2.5,
        "location": "app/views.py:12 in frozen",
        "where": {"file": "/srv/app/views.py", "line": 12, "function": "frozen"},
        "chain": ["app/views.py:12 in frozen"],
        "item": 0,
    }
    work = [("request", "GET /frozen/", "app.frozen", 2600)]
    checked = report.check(folder_with(tmp_path, snapshot(work, time=now, loop=loop)))
    (row,) = checked.rows
    assert (row.hang, row.view, row.location) == (
        HangKind.BLOCKED_LOOP,
        "app.frozen",
        loop["location"],
    )
    assert row.where == loop["where"]

    checked = report.check(
        folder_with(tmp_path / "b", snapshot(time=now, loop={**loop, "item": None}))
    )
    (row,) = checked.rows
    assert (row.kind, row.what, row.hang, row.state) == (
        "loop",
        "the event loop",
        HangKind.BLOCKED_LOOP,
        "blocked",
    )


def test_the_table_shows_no_control_characters(tmp_path: Path) -> None:
    work = [("request", "GET /\x1b[2J" + "x" * 200, None, 60_000)]
    checked = report.check(folder_with(tmp_path, snapshot(work, time=time.time())))
    lines = report.table(checked).splitlines()
    assert lines[0].split() == list(report.HEADERS)
    assert "\x1b" not in lines[1] and "GET /\\x1b[2J" in lines[1] and "…" in lines[1]


# -- the command ----------------------------------------------------------------------


def run_command(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("checkshutdown", *args, stdout=out, stderr=err)
    return int(exited.value.code or 0), out.getvalue(), err.getvalue()


def test_the_command_prints_a_table_and_exits_1(tmp_path: Path, settings: Any) -> None:
    live = snapshot(time=time.time(), work=[("request", "GET /a/", "app.a", 60_000)])
    folder_with(tmp_path, live)
    (tmp_path / "state" / "live-h-9.json").write_text("{corrupt")
    settings.GRACEFUL = {"STATE_DIR": str(tmp_path / "state")}
    status, out, err = run_command()
    assert status == 1
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["HOST", "PID", "SOURCE"]
    assert "app.a (GET /a/)" in lines[1] and "slow" in lines[1]
    assert lines[-1].startswith("1 problem: 1 slow")
    assert "live-h-9.json: not JSON" in err


def test_the_command_json(tmp_path: Path, settings: Any) -> None:
    live = snapshot(time=time.time(), work=[("request", "GET /a/", "app.a", 60_000)])
    folder_with(tmp_path, live)
    settings.GRACEFUL = {"STATE_DIR": str(tmp_path / "state")}
    status, out, _ = run_command("--json", "--threshold", "100")
    data = json.loads(out)
    assert status == 0 and data["status"] == 0 and data["rows"] == []
    assert data["workers"][0]["pid"] == ME and data["workers"][0]["in_flight"] == 1


def test_the_command_cannot_check_without_state_or_with_bad_settings(
    tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {"STATE_DIR": str(tmp_path / "none")}
    status, out, _ = run_command()
    assert (
        status == 2
        and out.strip() == f"cannot check: no state found: {tmp_path / 'none'} does not exist"
    )
    settings.GRACEFUL = {"HEARTBEAT": 0}
    status, out, _ = run_command()
    assert status == 2 and out.startswith(
        "cannot check: GRACEFUL settings are invalid: graceful.E004"
    )
    settings.GRACEFUL = {"HEARTBEAT": 0}
    status, out, _ = run_command("--json")
    assert status == 2 and json.loads(out)["reason"].startswith("cannot check: GRACEFUL")


def test_a_dead_workers_snapshot_gives_way_to_its_last_report(tmp_path: Path) -> None:
    """A worker may die after its last report but before its live snapshot went."""
    pid, started = dead_pid(), time.time() - 60
    live = snapshot(pid=pid, started=started, time=time.time() - 1)
    live["items"] = {"kind": [0], "what": ["GET /x/"], "view": [0], "age_ms": [99_000]}
    live["kinds"], live["views"] = ["request"], [None]
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / f"live-h-{pid}.json").write_text(json.dumps(live))
    last = {**last_report(pid), "time": time.time() - 2}
    (folder / f"last-h-{pid}.json").write_text(json.dumps(last))

    checked = report.check(FileStore(str(folder)))
    assert [(w.source, w.pid) for w in checked.workers] == [("last", pid)]
    assert [row.what for row in checked.rows] == ["GET /stuck/"]

    # a last report of an earlier process with the same pid does not hide it
    (folder / f"last-h-{pid}.json").write_text(json.dumps({**last, "time": started - 10}))
    checked = report.check(FileStore(str(folder)))
    assert sorted(w.source for w in checked.workers) == ["died", "last"]


def test_a_dead_drills_live_snapshot_is_skipped_not_reported(tmp_path: Path) -> None:
    """A drill killed with its server leaves their files: not problems of this project."""
    pid = dead_pid()
    work = [("request", "GET /stubborn/", "app.stubborn", 90_000)]
    drill = snapshot(work, host="drill-0f0f0f0f", pid=pid, machine=machine_id(), time=time.time())
    store = folder_with(tmp_path, snapshot(time=time.time()), drill)
    checked = report.check(store)
    assert (checked.status, checked.reason) == (0, "OK: nothing hangs (1 live worker, 0 in flight)")
    assert [s.reason for s in checked.skipped] == [
        "left by an interrupted checkshutdown --drill (its server is gone)"
    ]


def test_a_dead_worker_on_this_machine_died_whatever_its_host_id(tmp_path: Path) -> None:
    pid = dead_pid()
    other = snapshot(host="web-2", pid=pid, machine=machine_id(), time=time.time())
    checked = report.check(folder_with(tmp_path, other))
    assert [(w.host, w.source) for w in checked.workers] == [("web-2", "died")]


def test_a_dead_workers_snapshot_is_aged_out_after_a_day(tmp_path: Path) -> None:
    pid = dead_pid()
    old = snapshot(pid=pid, time=time.time() - 25 * 3600)
    checked = report.check(folder_with(tmp_path, old))
    assert checked.status == 2 and checked.workers == []
    assert [s.reason for s in checked.skipped] == ["a dead worker's, silent for more than 24 h"]
