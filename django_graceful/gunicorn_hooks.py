"""Gunicorn server hooks: the arbiter exits non-zero when django_graceful had to end a
worker with a non-zero status.

Gunicorn's arbiter logs how each worker it reaped exited, and then exits 0 whatever they
exited with: a process manager reads a clean stop where django_graceful's watchdog ended a
worker (a shutdown hook that never returned, a blocked event loop). With these hooks in
Gunicorn's configuration the arbiter exits with that worker's status and logs why::

    gunicorn -c python:django_graceful.gunicorn_hooks proj.asgi:application \\
        -k uvicorn_worker.UvicornWorker

or, in a ``gunicorn.conf.py`` of your own (chain them if you have hooks of these names)::

    from django_graceful.gunicorn_hooks import child_exit, on_exit

``manage.py serve --server gunicorn`` uses them unless a ``gunicorn.conf.py`` is in the
folder it runs in (Gunicorn reads that one instead). A worker tells its arbiter through a
private folder of the temporary directory, one file per worker it ended (``note_ending``,
called by the worker's driver); the arbiter reads the files of the workers it reaped as it
exits. The hooks import nothing of Django's: the arbiter's exit is not slowed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from typing import Any

#: The pids of the workers this arbiter reaped.
_reaped: set[int] = set()
#: The most characters of a worker's note read back (the reason is one line).
MAX_NOTE = 2000


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` (in the arbiter, for each worker it reaped)."""
    _reaped.add(worker.pid)


def on_exit(server: Any) -> None:
    """Gunicorn's ``on_exit``: log each worker of this arbiter's that django_graceful
    ended with a non-zero status, and exit with the first one's status."""
    endings = read_endings(os.getpid(), _reaped)
    for pid, status, why in endings:
        server.log.error("django_graceful: worker %d ended with status %d: %s", pid, status, why)
    if endings:
        sys.exit(endings[0][1])


def note_ending(why: str, status: int) -> None:
    """In a worker the lifecycle ends now with ``status`` (non-zero): tell its arbiter."""
    folder = _folder(os.getppid())
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    if not _ours(folder):
        raise PermissionError(f"{folder} is not a folder of this user's")
    line = " ".join(why.split())[:MAX_NOTE]
    with open(os.path.join(folder, str(os.getpid())), "w", encoding="utf-8") as note:
        note.write(f"{status}\n{line}\n")


def read_endings(arbiter: int, pids: set[int]) -> list[tuple[int, int, str]]:
    """``(pid, status, why)`` of each worker in ``pids`` whose ending ``arbiter`` was told
    of; the notes are removed."""
    folder = _folder(arbiter)
    endings: list[tuple[int, int, str]] = []
    if not _ours(folder):
        return endings
    for pid in sorted(pids):
        path = os.path.join(folder, str(pid))
        try:
            with open(path, encoding="utf-8", errors="replace") as note:
                status, _, why = note.read(MAX_NOTE + 20).partition("\n")
            os.unlink(path)
            endings.append((pid, int(status) or 1, why.strip()))
        except (OSError, ValueError):
            continue
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # only if no other note is in it
    return endings


def _folder(arbiter: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"django_graceful-gunicorn-{arbiter}")


def _ours(folder: str) -> bool:
    """Whether ``folder`` is a folder (not a link) of this user's that no one else can write."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022
