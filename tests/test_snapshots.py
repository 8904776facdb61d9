"""Worker snapshots: what they hold, how hangs are named, the heartbeat, and the two stores."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from django_graceful import CancelReason, start_thread
from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful._core.registry import Tracked
from django_graceful._diagnosis import report
from django_graceful._diagnosis.hangs import HangKind, classify
from django_graceful._diagnosis.publisher import Publisher
from django_graceful._diagnosis.snapshot import FORMAT, host_id
from django_graceful._diagnosis.stores import (
    INDEX_KEY,
    CacheStore,
    FileStore,
    StoreError,
    pid_alive,
)
from django_graceful.asgi import GracefulASGI
from django_graceful.signals import hang_detected
from tests.project import views_hangs

from .inprocess import (
    NO_SIGNALS,
    Events,
    open_request,
    release_the_swallower,
    start,
    stop,
    wait_for,
)
from .markers import marked

QUIET = {**NO_SIGNALS, "LIFESPAN": []}
HERE = Path(__file__)


def publisher(lifecycle: Lifecycle, tmp_path: Path) -> Publisher:
    lifecycle.loop = asyncio.get_running_loop()
    pub = Publisher(lifecycle, FileStore(str(tmp_path / "state"), host_id(), os.getpid()))
    pub.store.prepare()
    return pub


def track(lifecycle: Lifecycle, what: str, task: Any = None, **fields: Any) -> Tracked:
    item = Tracked("request", what, task=task)
    for name, value in fields.items():
        setattr(item, name, value)
    return lifecycle.registry.add(item)


async def parked(release: asyncio.Event) -> None:
    await release.wait()  # here: parked


async def swallowing(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await asyncio.sleep(0.02)  # here: swallowing
        except asyncio.CancelledError:
            pass


@pytest.fixture
def announced() -> Any:
    seen: list[tuple[Any, str, str | None]] = []

    def receiver(sender: Any, item: Any, kind: str, location: str | None, **kwargs: Any) -> None:
        seen.append((item, kind, location))

    hang_detected.connect(receiver, weak=False)
    yield seen
    hang_detected.disconnect(receiver)


# -- what a snapshot holds ----------------------------------------------------------------


async def test_every_item_is_listed_and_only_the_suspect_ones_located(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = QUIET
    pub = publisher(lifecycle, tmp_path)
    release = asyncio.Event()
    tasks = [asyncio.ensure_future(parked(release)) for _ in range(3)]
    await asyncio.sleep(0)
    young = track(lifecycle, "GET /young/", tasks[0], view="app.views.young")
    old = track(lifecycle, "GET /old/", tasks[1])
    old.started -= 5
    told = track(lifecycle, "GET /told/", tasks[2])
    told.tell(CancelReason.DISCONNECT)

    document, found = pub.snapshot()

    assert document["format"] == FORMAT and document["report"] == "live"
    assert document["host"] == host_id() and document["pid"] == os.getpid()
    assert document["phase"] == "new" and document["server"] is None
    items = document["items"]
    assert items["what"] == ["GET /young/", "GET /old/", "GET /told/"]
    assert [document["views"][n] for n in items["view"]] == ["app.views.young", None, None]
    assert document["kinds"] == ["request"] and items["kind"] == [0, 0, 0]
    assert items["age_ms"][1] >= 5000 > items["age_ms"][0]
    assert set(document["details"]) == {"1", "2"}  # by position: the old one, the told one
    here = marked(HERE, "# here: parked")
    assert document["details"]["1"]["location"] == f"{here} in parked"
    assert document["details"]["2"] == {
        "reason": "disconnect",
        "told_ms": document["details"]["2"]["told_ms"],
        "location": f"{here} in parked",
        "where": {"file": str(HERE), "line": int(here.split(":")[1]), "function": "parked"},
        "chain": [f"{here} in parked", document["details"]["2"]["chain"][-1]],
    }
    assert found == []  # young enough, and told too recently
    assert young.reason is None and old.reason is None
    release.set()
    await asyncio.gather(*tasks)


def test_host_id_comes_from_the_environment_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRACEFUL_HOST_ID", "web-7")
    assert host_id() == "web-7"
    monkeypatch.delenv("GRACEFUL_HOST_ID")
    import socket

    assert host_id() == socket.gethostname()


def test_told_at_is_when_the_work_was_first_told() -> None:
    item = Tracked("request", "GET /")
    assert item.told_at is None
    item.tell(CancelReason.DISCONNECT)
    first = item.told_at
    item.cancel(CancelReason.SHUTDOWN)
    assert first is not None and item.told_at == first and item.reason is CancelReason.DISCONNECT


# -- the hang kinds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "age", "told", "shielded", "wait", "expected"),
    [
        ("request", 1, None, False, None, None),
        ("request", 31, None, False, None, HangKind.SLOW),
        ("request", 31, None, False, "thread", HangKind.SYNC_THREAD),
        ("request", 6, 4.9, False, None, None),
        ("request", 6, 5, False, None, HangKind.SWALLOWED_CANCEL),
        ("request", 6, 5, True, None, HangKind.SHIELD_OVERRUN),
        ("request", 6, 5, False, "thread", HangKind.SYNC_THREAD),
        ("websocket", 999, None, False, None, None),
        ("websocket", 9, 6, False, None, HangKind.SWALLOWED_CANCEL),
        ("task", 999, None, False, None, None),
        ("task", 9, 6, False, None, HangKind.SWALLOWED_CANCEL),
        ("thread", 999, None, False, None, None),
        ("thread", 9, 6, False, None, HangKind.STUCK_THREAD),
    ],
)
def test_classify(
    kind: str, age: float, told: float | None, shielded: bool, wait: str | None, expected: Any
) -> None:
    found = classify(kind, age, told, shielded=shielded, wait=wait, threshold=30, cancel_timeout=5)
    assert found == expected


async def test_a_swallowed_cancel_is_named_with_its_line_and_announced_once(
    lifecycle: Lifecycle, tmp_path: Path, announced: list[Any], settings: Any
) -> None:
    settings.GRACEFUL = {**QUIET, "CANCEL_TIMEOUT": 0.2}
    pub = publisher(lifecycle, tmp_path)
    release = asyncio.Event()
    task = asyncio.ensure_future(swallowing(release))
    item = track(lifecycle, "GET /x/", task, view="app.views.x")
    await asyncio.sleep(0.05)
    item.tell(CancelReason.DISCONNECT)
    task.cancel()
    await asyncio.sleep(0.05)
    pub.publish()
    assert announced == []  # told 0.05 s ago: it may still be unwinding
    await asyncio.sleep(0.2)
    document = pub.publish()
    pub.publish()

    where = f"{marked(HERE, '# here: swallowing')} in swallowing"
    assert announced == [(item, HangKind.SWALLOWED_CANCEL, where)]
    detail = document["details"]["0"]
    assert detail["hang"] == HangKind.SWALLOWED_CANCEL and detail["location"] == where
    assert detail["chain"][-2:] == [where, detail["chain"][-1]]
    assert "sleep" in detail["chain"][-1]  # asyncio.sleep, awaited from the project line
    release.set()
    await task


async def test_an_async_view_awaiting_a_sync_thread_shows_the_threads_line(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {**QUIET, "HANG_THRESHOLD": 0.1}
    pub = publisher(lifecycle, tmp_path)
    release = threading.Event()
    running = threading.Event()

    def blocking() -> None:
        running.set()
        while not release.wait(0.01):  # here: blocking
            pass

    task = asyncio.ensure_future(sync_to_async(blocking)())
    item = track(lifecycle, "GET /sync/", task)
    assert await asyncio.to_thread(running.wait, 5)
    item.started -= 1

    document, found = pub.snapshot()

    detail = document["details"]["0"]
    where = f"{marked(HERE, '# here: blocking')} in blocking"
    assert detail["wait"] == "thread" and detail["hang"] == HangKind.SYNC_THREAD
    assert detail["location"] == where and where in detail["chain"]
    assert found == [(item, HangKind.SYNC_THREAD, where, item.id)]
    release.set()
    await task


async def test_a_thread_that_ignores_its_stop_event_is_stuck(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {**QUIET, "CANCEL_TIMEOUT": 0, "GRACE_PERIOD": 0}
    await lifecycle.startup(app=None)
    pub = publisher(lifecycle, tmp_path)
    release = threading.Event()

    def ignores_stop(stop: threading.Event) -> None:
        while not release.wait(0.01):  # here: ignores-stop
            pass

    start_thread(ignores_stop, name="ignorer")
    assert [item.kind for item in lifecycle.registry] == ["thread"]
    document, found = pub.snapshot()
    assert found == []
    assert "hang" not in document["details"]["0"]  # a thread may run forever

    lifecycle._tell_closing()
    pub.on_phase(Phase.CLOSING)
    document, _ = pub.snapshot()

    detail = document["details"]["0"]
    assert detail["hang"] == HangKind.STUCK_THREAD and "told_ms" in detail
    assert detail["location"] == f"{marked(HERE, '# here: ignores-stop')} in ignores_stop"
    release.set()
    await asyncio.sleep(0.1)
    assert not lifecycle.registry


async def test_a_shield_that_holds_the_cancel_past_the_timeout_overruns(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {**QUIET, "CANCEL_TIMEOUT": 0}
    pub = publisher(lifecycle, tmp_path)
    release = asyncio.Event()
    task = asyncio.ensure_future(parked(release))
    item = track(lifecycle, "GET /shielded/", task)
    item.begin_shield()
    item.cancel(CancelReason.SHUTDOWN)

    document, _ = pub.snapshot()

    detail = document["details"]["0"]
    assert detail["hang"] == HangKind.SHIELD_OVERRUN and detail["shielded"] is True
    assert detail["reason"] == "shutdown"
    item.end_shield()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_frozen_loop_is_reported_while_it_is_frozen(
    lifecycle: Lifecycle, tmp_path: Path, announced: list[Any], settings: Any
) -> None:
    """The heartbeat thread notices, names the work and its time.sleep line, and writes
    it: a reader sees it during the freeze. The loop answering again clears it."""
    settings.GRACEFUL = {**QUIET, "HEARTBEAT": 0.2}
    pub = publisher(lifecycle, tmp_path)
    freeze = 2.5

    async def freezer() -> None:
        time.sleep(freeze)  # noqa: ASYNC251  # here: freezer

    pub.start()
    await asyncio.sleep(0.3)
    seen: list[report.Report] = []
    reader = threading.Thread(
        target=lambda: (time.sleep(2.0), seen.append(report.check(pub.store)))
    )
    task = asyncio.ensure_future(freezer())
    item = track(lifecycle, "GET /frozen/", task, view="app.views.frozen")
    reader.start()
    await task
    reader.join()
    await asyncio.sleep(0.5)
    after = report.check(pub.store)
    pub.stop()

    where = f"{marked(HERE, '# here: freezer')} in freezer"
    assert [(a[1], a[2]) for a in announced] == [(HangKind.BLOCKED_LOOP, where)]
    assert announced[0][0] is item
    (during,) = seen
    assert during.status == report.PROBLEMS
    (row,) = during.rows
    assert (row.hang, row.location, row.view) == (HangKind.BLOCKED_LOOP, where, "app.views.frozen")
    assert row.age >= 1.0
    assert after.status == report.OK  # the loop answers again: nothing hangs now
    assert not list((tmp_path / "state").glob("live-*"))  # stop() removed it


# -- the heartbeat and the phases -----------------------------------------------------


async def test_the_heartbeat_rewrites_the_live_snapshot(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {**QUIET, "HEARTBEAT": 0.1}
    pub = publisher(lifecycle, tmp_path)
    pub.start()
    path = tmp_path / "state" / f"live-{host_id()}-{os.getpid()}.json"
    deadline = time.monotonic() + 3
    while not path.exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    first = json.loads(path.read_text())["time"]
    await asyncio.sleep(0.35)
    assert json.loads(path.read_text())["time"] > first
    pub.stop()
    assert not path.exists()


class BrokenStore:
    description = "a full disk"

    def __init__(self) -> None:
        self.fail = True

    def prepare(self) -> None:
        pass

    def write(self, text: str, *, last: bool = False) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")

    def remove_live(self) -> None:
        pass

    def tidy(self, alive: Any) -> None:
        pass

    def documents(self) -> Any:
        raise StoreError("broken")


async def test_a_write_failure_is_logged_once_and_never_raises(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = QUIET
    lifecycle.loop = asyncio.get_running_loop()
    store = BrokenStore()
    pub = Publisher(lifecycle, store)
    with caplog.at_level(logging.INFO, logger="django_graceful"):
        for _ in range(3):
            assert pub.publish() is None
        store.fail = False
        assert pub.publish() is not None
        store.fail = True
        pub.publish()
    messages = [r.getMessage() for r in caplog.records]
    failures = [m for m in messages if "No space left on device" in m]
    assert len(failures) == 2 and "a full disk" in failures[0]
    assert sum("written again" in m for m in messages) == 1


async def test_the_last_shutdown_report_names_the_view_that_hung(
    app: GracefulASGI, lifecycle: Lifecycle, tmp_path: Path, recorded: Events, settings: Any
) -> None:
    """Through GracefulASGI and Django: the view's dotted path (GracefulMiddleware), its
    line, the hang; written at REPORTING, 0600, without the query string; the live
    snapshot is gone at STOPPED."""
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0, "CANCEL_TIMEOUT": 0.3}
    pub = Publisher(lifecycle, FileStore(str(tmp_path / "state"), host_id(), os.getpid()))
    lifecycle.on_phase(pub.on_phase)
    lifespan, _ = await start(app)
    comm = await open_request(app, "/hangs/swallower/?secret=hunter2")
    await wait_for(recorded, "swallower-begin")
    await stop(lifespan)
    await release_the_swallower(comm)

    folder = tmp_path / "state"
    (last,) = folder.iterdir()
    assert last.name == f"last-{host_id()}-{os.getpid()}.json"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(last.stat().st_mode) == 0o600
    text = last.read_text()
    assert "hunter2" not in text and "secret" not in text
    checked = report.check(pub.store, last_only=True)
    assert checked.status == report.PROBLEMS
    (row,) = checked.rows
    where = marked(Path(views_hangs.__file__), "# hang: swallow-loop")
    assert row.view == "tests.project.views_hangs.swallower"
    assert row.what == "GET /hangs/swallower/"
    assert (row.hang, row.location) == (HangKind.SWALLOWED_CANCEL, f"{where} in swallower")
    assert row.source == "last" and row.reason == "shutdown" and row.cancel_count >= 1


# -- the stores -----------------------------------------------------------------------


def test_files_are_private_and_written_whole(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    store = FileStore(str(folder), "web-1", 4242)
    store.prepare()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    store.write('{"a": 1}')
    store.write('{"a": 2}', last=True)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["last-web-1-4242.json", "live-web-1-4242.json"]  # no temp file left
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.remove_live()
    store.remove_live()  # twice is fine
    assert [p.name for p in folder.iterdir()] == ["last-web-1-4242.json"]


def test_a_host_id_is_made_safe_for_a_file_name(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), "../../etc/x y", 7)
    store.write("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["live-.._.._etc_x_y-7.json"]


def test_a_planted_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "state"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="not a folder"):
        FileStore(str(link)).prepare()
    if os.getuid() == 0:
        other = tmp_path / "other"
        other.mkdir()
        os.chown(other, 12345, 12345)
        with pytest.raises(StoreError, match="another user"):
            FileStore(str(other)).prepare()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_tidy_keeps_a_dead_workers_snapshot_as_its_last_report(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    me = FileStore(str(folder), "web-1", os.getpid())
    me.prepare()
    gone, reported, other_host = dead_pid(), dead_pid(), dead_pid()
    FileStore(str(folder), "web-1", gone).write('{"gone": 1}')
    FileStore(str(folder), "web-1", reported).write('{"live": 1}')
    FileStore(str(folder), "web-1", reported).write('{"last": 1}', last=True)
    FileStore(str(folder), "web-2", other_host).write('{"elsewhere": 1}')
    old = FileStore(str(folder), "web-1", 99999999)
    old.write("{}", last=True)
    os.utime(folder / "last-web-1-99999999.json", (0, 0))
    (folder / ".live-web-1-1.json.abcd.tmp").write_text("half")
    os.utime(folder / ".live-web-1-1.json.abcd.tmp", (0, 0))

    me.tidy(pid_alive)

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"last-web-1-{gone}.json", f"last-web-1-{reported}.json", f"live-web-2-{other_host}.json"]
    )
    assert (folder / f"last-web-1-{gone}.json").read_text() == '{"gone": 1}'
    assert (folder / f"last-web-1-{reported}.json").read_text() == '{"last": 1}'


def test_tidy_keeps_the_newest_last_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_graceful._diagnosis import stores

    monkeypatch.setattr(stores, "MAX_LAST_REPORTS", 3)
    store = FileStore(str(tmp_path), "web-1", os.getpid())
    for pid in range(1, 6):
        FileStore(str(tmp_path), "web-1", pid).write("{}", last=True)
        os.utime(tmp_path / f"last-web-1-{pid}.json", (time.time() - 100 + pid,) * 2)
    store.tidy(lambda pid: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last-web-1-3.json",
        "last-web-1-4.json",
        "last-web-1-5.json",
    ]


LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "graceful"}


def test_the_cache_store_lists_live_workers_and_last_reports(settings: Any) -> None:
    settings.CACHES = {"default": LOCMEM, "state": {**LOCMEM, "LOCATION": "graceful-state"}}
    caches["state"].clear()
    one = CacheStore("state", "host-a", 11)
    two = CacheStore("state", "host-b", 22)
    one.write('{"one": "live"}')
    two.write('{"two": "live"}')
    two.write('{"two": "last"}', last=True)

    documents, skipped = one.documents()
    assert skipped == []
    assert sorted((d.kind, d.text) for d in documents) == [
        ("last", '{"two": "last"}'),
        ("live", '{"one": "live"}'),
        ("live", '{"two": "live"}'),
    ]

    two.remove_live()
    caches["state"].delete("django_graceful:live:host-a:11")  # as if it expired
    documents, _ = one.documents()
    assert [(d.kind, d.text) for d in documents] == [("last", '{"two": "last"}')]

    one.write('{"one": "back"}')  # the worker puts itself back in the index
    assert len(one.documents()[0]) == 2

    caches["state"].set("django_graceful:live:host-a:11", {"not": "text"})
    documents, skipped = one.documents()
    assert [s.reason for s in skipped] == ["not a snapshot (a dict)"]

    caches["state"].set(INDEX_KEY, "junk")
    with pytest.raises(StoreError, match="not ours"):
        one.documents()
    caches["state"].clear()
    with pytest.raises(StoreError, match="no state found"):
        one.documents()


class SlowStore(BrokenStore):
    description = "a cache that does not answer"

    def write(self, text: str, *, last: bool = False) -> None:
        time.sleep(3)


async def test_a_slow_store_does_not_hold_the_shutdown(
    lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.GRACEFUL = QUIET
    from django_graceful._diagnosis import publisher as snapshots

    monkeypatch.setattr(snapshots, "LOOP_WRITE_TIMEOUT", 0.2)
    lifecycle.loop = asyncio.get_running_loop()
    pub = Publisher(lifecycle, SlowStore())
    pub._thread = threading.current_thread()  # as if started: the phases apply
    began = time.monotonic()
    pub.on_phase(Phase.REPORTING)
    pub.on_phase(Phase.STOPPED)
    assert time.monotonic() - began < 1.0
