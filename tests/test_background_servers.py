"""Background threads and tasks stop at SIGTERM on the real servers, or are reported."""

from __future__ import annotations

import pytest

from .servers import SERVERS, running

pytestmark = pytest.mark.server


@pytest.mark.parametrize("server", SERVERS)
def test_the_flush_thread_writes_its_last_batch_and_the_periodic_task_ends(server: str) -> None:
    env = {"GRACEFUL_TEST_BACKGROUND": "plain"}
    grace = 10
    with running(server, graceful={"GRACE_PERIOD": grace}, env=env) as srv:
        srv.get("/pid/")  # started (lazily on Daphne)
        srv.signal()
        srv.wait_exit(grace + 5)
        assert srv.exit_after < grace / 2  # the thread and the task stop at once, not at the end
        [stopped] = srv.events("flusher-stopped")
        assert stopped["produced"] > 0 and stopped["flushed"] == stopped["produced"]
        assert srv.events("ticker-stopped")
        [refused] = srv.events("spawn-refused")
        assert "cannot spawn 'too-late': the shutdown began" in refused["message"]
        assert "hung at shutdown" not in srv.log()


@pytest.mark.parametrize("server", SERVERS)
def test_a_deaf_thread_and_a_stubborn_task_are_reported_and_do_not_hold_the_exit(
    server: str,
) -> None:
    env = {"GRACEFUL_TEST_BACKGROUND": "deaf,stubborn"}
    with running(server, graceful={"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 1}, env=env) as srv:
        srv.get("/pid/")
        srv.wait_event("deaf-begin")
        srv.signal()
        srv.wait_exit(10)
        assert srv.exit_after < 1 + 1 + 1.5, srv.log()
        log = srv.log()
        assert "hung at shutdown: thread deaf-thread" in log
        assert "time.sleep(3600)  # ignores stop" in log  # the thread's own line
        assert "hung at shutdown: task stubborn-task (cancelled" in log
        assert srv.events("task-swallowed")
        assert srv.events("flusher-stopped")  # the well-behaved thread still flushed
        assert "process still alive" not in log  # the adapters ended it, not the watchdog
