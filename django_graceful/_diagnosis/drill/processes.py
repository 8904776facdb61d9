"""The server's process group: who is still in it (read from /proc), ending it, its leftovers,
and tying the server's life to the drill's."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Seconds the server's other processes (workers) may outlive it before they count.
LEFTOVER_WAIT = 2.0
#: How often a group winding down is looked at.
POLL = 0.1
#: Linux's prctl option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def dies_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the child gets SIGTERM when this process dies, even
    by SIGKILL (Linux's ``PR_SET_PDEATHSIG``); None where there is no such thing.

    SIGTERM, not SIGKILL: the signal reaches the server's main process only, and a
    server stops its worker processes on SIGTERM (a SIGKILLed one leaves them running,
    e.g. Granian's); django_graceful's watchdog bounds the stop."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def tie() -> None:  # in the child, between fork and exec: no allocation, no locks
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the drill died before the tie was made
            os._exit(1)

    return tie


def group_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` still running (zombies waiting for a reaper excluded)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (name)": state ppid pgrp …
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def end(proc: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left of the server's process group, and reap the server."""
    if proc.poll() is None or group_members(proc.pid):
        kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def outlived(pgid: int) -> int:
    """How many processes of the server's group still run ``LEFTOVER_WAIT`` after it
    exited (they are killed)."""
    deadline = time.monotonic() + LEFTOVER_WAIT
    while (left := len(group_members(pgid))) and time.monotonic() < deadline:
        time.sleep(POLL)
    if left:
        kill_group(pgid)
    return left
