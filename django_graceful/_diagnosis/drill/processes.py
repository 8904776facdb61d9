"""The server's process group: who is still in it (read from /proc), ending it, its leftovers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

#: Seconds the server's other processes (workers) may outlive it before they count.
LEFTOVER_WAIT = 2.0
#: How often a group winding down is looked at.
POLL = 0.1


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
