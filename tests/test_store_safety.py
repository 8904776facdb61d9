"""A state folder is trusted only when it is ours: readers and the writer check it alike,
work inside it without following a symlink, and read a bounded amount."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._diagnosis import report, stores
from django_graceful._diagnosis.publisher import Publisher
from django_graceful._diagnosis.snapshot import FORMAT, host_id
from django_graceful._diagnosis.stores import FileStore, StoreError
from django_graceful.conf import default_state_dir

from .inprocess import NO_SIGNALS

as_root = pytest.mark.skipif(os.getuid() != 0, reason="planting another user's folder needs root")
OTHER_UID = 54321


def forged(**fields: object) -> str:
    """A live snapshot of this host saying nothing hangs (what a forger writes)."""
    document = {
        "format": FORMAT,
        "version": 1,
        "report": "live",
        "host": host_id(),
        "pid": os.getpid(),
        "server": "uvicorn",
        "phase": "serving",
        "time": time.time(),
        "started": time.time() - 100,
        "heartbeat": 1.0,
        "hang_threshold": 30.0,
        "cancel_timeout": 5.0,
        "loop": None,
        "kinds": [],
        "views": [None],
        "items": {"kind": [], "what": [], "view": [], "age_ms": []},
        "details": {},
        **fields,
    }
    return json.dumps(document)


def plant(folder: Path, *, uid: int | None = None, mode: int = 0o700) -> Path:
    folder.mkdir(mode=0o700)
    (folder / f"live-{host_id()}-{os.getpid()}.json").write_text(forged())
    if uid is not None:
        os.chown(folder / f"live-{host_id()}-{os.getpid()}.json", uid, uid)
        os.chown(folder, uid, uid)
    folder.chmod(mode)
    return folder


def run_command(folder: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        override_settings(GRACEFUL={"STATE_DIR": str(folder)}),
        pytest.raises(SystemExit) as exited,
    ):
        call_command("checkshutdown", stdout=out, stderr=err)
    return int(exited.value.code or 0), out.getvalue().strip()


# -- readers --------------------------------------------------------------------------


@as_root
def test_checkshutdown_refuses_a_folder_another_user_planted(tmp_path: Path) -> None:
    folder = plant(tmp_path / "state", uid=OTHER_UID)
    status, out = run_command(folder)
    assert status == 2
    assert out == (
        f"cannot check: {folder} belongs to another user (uid {OTHER_UID}): refused; set "
        "GRACEFUL['STATE_DIR'] to a folder of your own"
    )


def test_checkshutdown_refuses_a_folder_others_may_write_to(tmp_path: Path) -> None:
    folder = plant(tmp_path / "state", mode=0o777)
    status, out = run_command(folder)
    assert status == 2
    assert out == (
        f"cannot check: {folder} is open to other users (mode 777): refused; "
        f"'chmod 700 {folder}' if it is yours"
    )


def test_checkshutdown_does_not_follow_a_symlinked_folder(tmp_path: Path) -> None:
    target = plant(tmp_path / "elsewhere")
    (tmp_path / "state").symlink_to(target)
    status, out = run_command(tmp_path / "state")
    assert (status, out) == (
        2,
        f"cannot check: {tmp_path / 'state'} is a symlink, not a folder: refused",
    )


@as_root
def test_a_file_another_user_put_in_our_folder_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "live-h-1.json").write_text(forged(pid=1))
    os.chown(folder / "live-h-1.json", OTHER_UID, OTHER_UID)
    checked = report.check(FileStore(str(folder)))
    assert checked.status == 2
    assert [s.reason for s in checked.skipped] == [
        f"unreadable: belongs to another user (uid {OTHER_UID})"
    ]


def test_a_file_too_large_for_a_snapshot_is_skipped_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stores, "MAX_BYTES", 1000)
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / f"live-{host_id()}-{os.getpid()}.json").write_text(forged())
    (folder / "live-h-2.json").write_text(forged(pid=2, kinds=["x" * 2000]))
    checked = report.check(FileStore(str(folder)))
    assert checked.status == 0, checked.reason
    assert [(Path(s.source).name, s.reason) for s in checked.skipped] == [
        (
            "live-h-2.json",
            f"unreadable: {(folder / 'live-h-2.json').stat().st_size} bytes, "
            "larger than any snapshot (1000)",
        )
    ]


def test_a_folder_with_too_many_files_is_read_up_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stores, "MAX_FILES", 3)
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    for pid in range(1, 6):
        (folder / f"last-h-{pid}.json").write_text("{}")
    (folder / "live-h-9.json").write_text("{}")
    documents, skipped = FileStore(str(folder)).documents()
    assert [Path(d.source).name for d in documents] == [
        "live-h-9.json",  # live snapshots first
        "last-h-1.json",
        "last-h-2.json",
    ]
    assert [(Path(s.source).name, s.reason) for s in skipped] == [
        (f"last-h-{pid}.json", "not read: 3 files read already (the most checkshutdown reads)")
        for pid in (3, 4, 5)
    ]


# -- the writer -----------------------------------------------------------------------


async def test_nothing_is_written_to_a_refused_folder(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    """Not the heartbeat, and not the last report at shutdown either."""
    settings.GRACEFUL = {**NO_SIGNALS, "LIFESPAN": []}
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "state").symlink_to(target)
    lifecycle.loop = asyncio.get_running_loop()
    pub = Publisher(lifecycle, FileStore(str(tmp_path / "state"), host_id(), os.getpid()))
    with pytest.raises(StoreError, match="symlink"):
        pub.store.prepare()
    assert pub.publish() is None
    assert pub.publish(last=True) is None
    assert list(target.iterdir()) == []


def test_a_folder_swapped_for_a_symlink_after_it_was_made_is_not_followed(
    tmp_path: Path,
) -> None:
    store = FileStore(str(tmp_path / "state"), "web-1", 7)
    store.prepare()
    (tmp_path / "state").rmdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "state").symlink_to(target)
    for action in (store.write, lambda text: store.write(text, last=True)):
        with pytest.raises(StoreError, match="symlink"):
            action("{}")
    assert list(target.iterdir()) == []


def test_the_default_folder_is_per_user_private_and_not_to_be_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    settings.SECRET_KEY = "one secret"
    first = default_state_dir()
    settings.SECRET_KEY = "another secret"
    other = default_state_dir()
    assert Path(first).parent == tmp_path and Path(first).name.startswith(
        f"django-graceful-{os.getuid()}-"
    )
    assert first != other  # the name depends on the project's secret
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    settings.SECRET_KEY = "one secret"
    assert Path(default_state_dir()).name == Path(first).name
