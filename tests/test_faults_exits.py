"""Under faults: when the watchdog must end a worker, what the log names and what the
server exits with.

A shutdown hook that blocks the event loop (``time.sleep`` in an async hook) holds the
worker past its budget; the watchdog ends the worker with ``WATCHDOG_STATUS`` and its line
names the hook. What a process manager sees is the status of the process it started: the
worker itself (Uvicorn, Daphne, Hypercorn with ``--workers 0``, what ``manage.py serve``
runs), or a parent that supervises the workers and decides the status on its own:
Granian's main process and Gunicorn's arbiter exit 0 once they stopped their workers,
whatever those exit with, and so does Hypercorn's parent for one worker (hypercorn#269);
Gunicorn's arbiter exits non-zero with django_graceful's server hooks, which the tests
use as README tells users to.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from django_graceful._core.phases import EXIT_SLACK
from django_graceful._core.stops import WATCHDOG_STATUS

from .servers import SERVERS, WATCHDOG_LINE, Server, budget_of
from .test_checkshutdown import checkshutdown

pytestmark = pytest.mark.server

#: Short phases and hook bounds: the watchdog acts a few seconds after the signal.
SHORT = {"GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 0.5, "HOOK_TIMEOUT": 0.2}
#: The exit status of the process the test started, once the watchdog ended its worker.
EXIT_STATUS = {
    "uvicorn": WATCHDOG_STATUS,
    "hypercorn": WATCHDOG_STATUS,  # one in-process worker (--workers 0)
    "daphne": WATCHDOG_STATUS,
    "granian": 0,  # Granian's main process ignores how a worker it stopped exits
    "granian-rsgi": 0,
    # the arbiter exits 0 whatever its workers exit with; django_graceful.gunicorn_hooks
    # reads their last reports
    "gunicorn-uvicorn": WATCHDOG_STATUS,
    "gunicorn-asgi": WATCHDOG_STATUS,
}
#: What the watchdog's line says of the hook that blocks the loop.
BLOCKING_HOOK = (
    "phase REPORTING: hook tests.project.hooks.loop_blocking_hook has blocked the event loop for "
)


def stopped_by_the_watchdog(srv: Server) -> tuple[int, str, str]:
    """Start ``srv``, signal it and wait for its exit; its status, its log and the
    watchdog's line. The watchdog ended it at budget + EXIT_SLACK: not before, and not
    much after."""
    srv.start()
    srv.get("/pid/")  # Daphne starts the app at its first request
    srv.wait_engaged()
    budget = budget_of(srv)
    srv.signal()
    code = srv.wait_exit(budget + EXIT_SLACK + 10)
    log = srv.log()
    [line] = [line for line in log.splitlines() if WATCHDOG_LINE in line]
    assert budget + EXIT_SLACK - 0.3 < srv.exit_after < budget + EXIT_SLACK + 3, log
    return code, log, line


@pytest.mark.parametrize("server", SERVERS)
def test_a_hook_that_blocks_the_loop_is_named_by_the_watchdog_which_ends_the_worker_non_zero(
    server: str, tmp_path: Path
) -> None:
    srv = Server(
        server,
        graceful={**SHORT, "STATE_DIR": str(tmp_path / "state")},
        env={"GRACEFUL_TEST_BLOCK_HOOK": "loop"},
        workers=0 if server == "hypercorn" else None,
    )
    try:
        code, log, line = stopped_by_the_watchdog(srv)
        assert BLOCKING_HOOK in line, line
        assert f"(its bound: 0.5 s); exiting now with status {WATCHDOG_STATUS}." in line, line
        assert srv.events("blocking-hook")
        if server.startswith("gunicorn"):
            assert re.search(rf"Worker \(pid:\d+\) exited with code {WATCHDOG_STATUS}\.", log)
            assert re.search(r"django_graceful: worker \d+ ended with status 1: ended by the ", log)
        assert code == EXIT_STATUS[server], log
        # Its last report, written before the hooks ran, is written again: never OK.
        report = checkshutdown(srv, "--last")
        assert report.returncode == 1, (report.stdout, report.stderr)
        assert "ended by the watchdog" in report.stdout and BLOCKING_HOOK in report.stdout
    finally:
        srv.kill()


def test_a_lifespan_exit_that_blocks_the_loop_is_named_by_the_watchdog() -> None:
    """The same for a LIFESPAN manager whose exit blocks the loop (one server: the naming
    is the lifecycle's, alike on every server)."""
    lifespan = "tests.project.lifespan.blocks_on_exit"
    srv = Server("uvicorn", graceful={**SHORT, "LIFESPAN": [lifespan]})
    try:
        code, log, line = stopped_by_the_watchdog(srv)
        expected = f"phase REPORTING: LIFESPAN {lifespan} (on exit) has blocked the event loop"
        assert expected in line, line
        assert srv.events("blocking-lifespan-exit")
        assert code == WATCHDOG_STATUS, log
    finally:
        srv.kill()
