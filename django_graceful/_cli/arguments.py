"""Argument types of the management commands: a bad value is argparse's usage error."""

from __future__ import annotations


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
