"""Argument types of the management commands: a bad value is argparse's usage error."""

from __future__ import annotations

import argparse
import os
import stat


def seconds(value: str) -> float:
    """A finite, non-negative number of seconds."""
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(value)
    return number


def positive_seconds(value: str) -> float:
    """A finite number of seconds, more than 0 (a timeout)."""
    number = seconds(value)
    if number <= 0:
        raise ValueError(value)
    return number


def positive_int(value: str) -> int:
    """A pid, a count of workers or of requests: 1 or more."""
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return number


def port_number(value: str) -> int:
    """A TCP port (0: any free one)."""
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(value)
    return port


#: The longest path a Unix-domain socket can be bound to (``sun_path``, less its NUL).
MAX_SOCKET_PATH = 107


def socket_path(value: str) -> str:
    """A path a Unix-domain socket can be bound to: short enough, in a folder that exists,
    and not a file that is something else than a socket (a stale socket the server
    removes before it binds)."""
    if not value or len(os.fsencode(value)) > MAX_SOCKET_PATH:
        raise argparse.ArgumentTypeError(
            f"{value!r}: a Unix socket's path must have 1 to {MAX_SOCKET_PATH} bytes"
        )
    folder = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{value!r}: no folder {folder!r} to create it in")
    if os.path.lexists(value) and not stat.S_ISSOCK(os.lstat(value).st_mode):
        raise argparse.ArgumentTypeError(f"{value!r} exists and is not a socket")
    return value
