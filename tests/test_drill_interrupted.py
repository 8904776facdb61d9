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

from .servers import ROOT

pytestmark = pytest.mark.server

DRILL = [sys.executable, "manage.py", "checkshutdown", "--drill"]


def example_env(tmp_path: Path) -> dict[str, str]:
    """The example project as ``test_drill`` runs it: its own database and state folder."""
    environ = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    environ.update(
        GRACEFUL_GRACE_PERIOD="1",
        GRACEFUL_CANCEL_TIMEOUT="1",
        EXAMPLE_DB=str(tmp_path / "db.sqlite3"),
        EXAMPLE_STATE_DIR=str(tmp_path / "state"),
    )
    return environ


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP])
def test_the_drills_server_dies_with_the_drill_and_leaves_no_problem_behind(
    signum: int, tmp_path: Path
) -> None:
    env = example_env(tmp_path)
    drill = subprocess.Popen(
        [*DRILL, "--url", "/stubborn/", "--wait", "60"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    state = tmp_path / "state"
    server = 0
    try:
        wait_until(lambda: any(state.glob("live-drill-*.json")), 30, "the drill's server")
        (live,) = state.glob("live-drill-*.json")
        server = int(live.stem.rpartition("-")[2])
        time.sleep(1.5)  # the request is in flight, and in the live snapshot
        drill.send_signal(signum)
        drill.wait(20)
        wait_until(lambda: not group_members(server), 5, "the server's end")
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait(5)
        if server and group_members(server):  # the test failed: leave nothing running
            os.killpg(server, signal.SIGKILL)
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
