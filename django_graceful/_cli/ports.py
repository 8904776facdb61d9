"""A port to start a server on, leased: processes starting servers side by side never share one.

Asking the kernel for a free port (bind to port 0, close, hand the number to a server)
races: another process may be handed the same number before the server binds it, or
hold it as the local port of a client connection; and servers that bind with
``SO_REUSEPORT`` (Granian) then share it silently, each taking some of the other's
connections. So a port comes from below the kernel's ephemeral range (no client socket
is given one), and is leased: a lock (``flock``) on a file named after it, in a folder
of the system's temp dir, held by the process that took it until it has taken
``KEPT_LEASES`` more, or exits. Another process skips a leased port; a port that does
not bind (something else listens there) is skipped too.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

#: Where the ports are taken from: below Linux's default ephemeral range (32768-60999).
PORTS = range(20000, 32000)
#: How many of its latest leases a process holds (a test session starts servers one
#: after the other; a lease outlives its server by far).
KEPT_LEASES = 64
#: The folder of the lock files (one per port ever leased: empty files).
LEASES = Path(tempfile.gettempdir()) / "django-graceful-ports"

_held: collections.deque[int] = collections.deque()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host``, leased to this process."""
    LEASES.mkdir(mode=0o777, exist_ok=True)
    start = random.randrange(len(PORTS))
    for offset in range(len(PORTS)):
        port = PORTS[(start + offset) % len(PORTS)]
        fd = _lease(port)
        if fd is None:
            continue
        if _binds(host, port):
            _hold(fd)
            return port
        os.close(fd)
    raise OSError(f"no free port in {PORTS.start}-{PORTS.stop - 1} at {host}")


def _lease(port: int) -> int | None:
    """The lock file's descriptor, locked; None if another process holds it."""
    try:
        fd = os.open(LEASES / str(port), os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _binds(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _hold(fd: int) -> None:
    _held.append(fd)
    while len(_held) > KEPT_LEASES:
        with contextlib.suppress(OSError):
            os.close(_held.popleft())  # closing the file releases its lock
