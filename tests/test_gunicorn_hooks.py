"""django_graceful.gunicorn_hooks in process: a worker's note of its ending reaches the
arbiter's exit, and only through a folder of this user's. On the real server:
tests/test_faults_exits.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from django_graceful import gunicorn_hooks
from django_graceful.gunicorn_hooks import child_exit, note_ending, on_exit, read_endings


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(gunicorn_hooks, "_reaped", set())
    return tmp_path


def notes_folder(tmp_path: Path) -> Path:
    """Where this process (as a worker) leaves its note for its parent (the arbiter)."""
    return tmp_path / f"django_graceful-gunicorn-{os.getppid()}"


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def error(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


def test_the_arbiter_exits_with_the_status_of_the_worker_that_was_ended(
    own_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getppid", os.getpid)  # this process is worker and arbiter
    note_ending("ended by the watchdog\n  phase REPORTING: hook app.flush", 1)
    assert oct(notes_folder(own_tempdir).stat().st_mode & 0o777) == "0o700"
    child_exit(None, SimpleNamespace(pid=os.getpid()))
    log = Log()
    with pytest.raises(SystemExit) as exited:
        on_exit(SimpleNamespace(log=log))
    assert exited.value.code == 1
    assert log.lines == [
        f"django_graceful: worker {os.getpid()} ended with status 1: "
        "ended by the watchdog phase REPORTING: hook app.flush"
    ]
    assert not notes_folder(own_tempdir).exists()  # read, removed


def read_as_arbiter(pids: set[int]) -> list[tuple[int, int, str]]:
    return read_endings(os.getppid(), pids)


def test_a_clean_stop_leaves_the_arbiter_exit_alone() -> None:
    child_exit(None, SimpleNamespace(pid=os.getpid()))
    log = Log()
    on_exit(SimpleNamespace(log=log))  # no SystemExit: gunicorn's own exit (0)
    assert log.lines == []


def test_only_the_notes_of_reaped_workers_are_read(own_tempdir: Path) -> None:
    note_ending("ended by the watchdog", 3)
    assert read_as_arbiter({os.getpid() + 1}) == []
    assert (notes_folder(own_tempdir) / str(os.getpid())).exists()  # another arbiter's turn
    assert read_as_arbiter({os.getpid()}) == [(os.getpid(), 3, "ended by the watchdog")]


@pytest.mark.parametrize("planted", ["writable by others", "a link"])
def test_a_folder_someone_else_could_have_planted_is_neither_written_nor_read(
    own_tempdir: Path, planted: str
) -> None:
    folder = notes_folder(own_tempdir)
    if planted == "a link":
        target = own_tempdir / "elsewhere"
        target.mkdir(mode=0o700)
        folder.symlink_to(target)
    else:
        folder.mkdir()
        folder.chmod(0o777)
    with pytest.raises(PermissionError, match="not a folder of this user's"):
        note_ending("ended by the watchdog", 1)
    (folder / str(os.getpid())).write_text("1\nplanted\n")
    assert read_as_arbiter({os.getpid()}) == []
