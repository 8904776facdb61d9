"""Ports leased for servers (``_cli/ports.py``): never one another process holds, never one
something listens on."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from django_graceful._cli import ports

ROOT = Path(__file__).resolve().parent.parent

LEASE_MANY = """
import sys
from django_graceful._cli import ports
count, first, last = map(int, sys.argv[1:])
ports.PORTS = range(first, last)
print(" ".join(str(ports.free_port()) for _ in range(count)), flush=True)
sys.stdin.readline()  # holds its leases until told to exit
"""


def test_a_port_leased_by_another_process_is_never_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both processes take from the same 40 ports, 20 of them between the two (somewhere in
    # the range: test runs side by side lease there too).
    first = random.randrange(ports.PORTS.start, ports.PORTS.stop - 40)
    few = range(first, first + 40)
    monkeypatch.setattr(ports, "PORTS", few)
    other = subprocess.Popen(
        [sys.executable, "-c", LEASE_MANY, "10", str(few.start), str(few.stop)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        theirs = {int(p) for p in other.stdout.readline().split()}
        mine = {ports.free_port() for _ in range(10)}
    finally:
        assert other.stdin is not None
        other.stdin.write("\n")
        other.stdin.flush()
        other.wait(10)
    assert len(theirs) == 10 and len(mine) == 10
    assert all(port in few for port in mine | theirs)
    assert not mine & theirs


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        monkeypatch.setattr(ports, "PORTS", range(taken, taken + 1))
        with pytest.raises(OSError, match="no free port"):
            ports.free_port()


def test_a_process_lets_go_of_its_oldest_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "KEPT_LEASES", 2)
    monkeypatch.setattr(ports, "_held", ports.collections.deque())
    first = ports.free_port()
    ports.free_port()
    ports.free_port()
    assert len(ports._held) == 2
    # The first lease is free again: another process may take that port now.
    fd = ports._lease(first)
    assert fd is not None
    ports.os.close(fd)
