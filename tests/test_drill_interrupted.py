"""An interrupted ``checkshutdown --drill`` leaves no server running and no problems behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from django_graceful._diagnosis.drill import group_members

from .servers import ROOT, example_env

pytestmark = pytest.mark.server

DRILL = [sys.executable, "manage.py", "checkshutdown", "--drill"]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("signum", "server"),
    [(signal.SIGKILL, "uvicorn"), (signal.SIGKILL, "granian"), (signal.SIGHUP, "uvicorn")],
)
def test_the_drills_server_dies_with_the_drill_and_leaves_no_problem_behind(
    signum: int, server: str, tmp_path: Path
) -> None:
    env = example_env(tmp_path)
    drill = subprocess.Popen(
        [*DRILL, "--server", server, "--url", "/stubborn/", "--wait", "60"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    state = tmp_path / "state"
    main = 0
    try:
        wait_until(lambda: any(state.glob("live-drill-*.json")), 30, "the drill's server")
        (live,) = state.glob("live-drill-*.json")
        worker = int(live.stem.rpartition("-")[2])
        main = os.getpgid(worker)  # the server's group (its workers too)
        time.sleep(1.5)  # the request is in flight, and in the live snapshot
        drill.send_signal(signum)
        drill.wait(20)
        wait_until(lambda: not group_members(main), 10, "the end of every server process")
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait(5)
        if main and group_members(main):  # the test failed: leave nothing running
            os.killpg(main, signal.SIGKILL)
    result = subprocess.run(
        [sys.executable, "manage.py", "checkshutdown"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "drill-" not in result.stdout, result.stdout
    if signum == signal.SIGKILL:  # the files stay, and are known for what they are
        assert "left by an interrupted checkshutdown --drill" in result.stderr, result.stderr
