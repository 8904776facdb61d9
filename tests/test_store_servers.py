"""The state store on a real server: a cache that never answers does not hold a shutdown."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from .servers import running

pytestmark = pytest.mark.server


@contextlib.contextmanager
def silent_redis() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers, as a Redis URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_a_cache_that_never_answers_does_not_hold_the_shutdown() -> None:
    """Nothing in flight, a 2 s budget: the server exits within it (not by the watchdog at
    3 s, waiting on the snapshot lock) and says once that the cache did not answer."""
    graceful = {
        "STATE_BACKEND": "cache",
        "STATE_CACHE": "state",
        "HEARTBEAT": 0.5,
        "GRACE_PERIOD": 1,
        "CANCEL_TIMEOUT": 1,
        "HOOK_TIMEOUT": 0,
        "LIFESPAN": [],
    }
    with (
        silent_redis() as url,
        running("uvicorn", graceful=graceful, env={"GRACEFUL_TEST_CACHE": url}) as srv,
    ):
        srv.wait_engaged()
        time.sleep(0.6)  # a heartbeat write is under way, and hangs
        srv.signal()
        srv.wait_exit(10)
        log = srv.log()
    assert srv.exit_after < 2.0 + 0.5, log
    assert "still alive" not in log and "exiting now" not in log, log
    warnings = [line for line in log.splitlines() if "could not write the worker snapshot" in line]
    assert len(warnings) == 1 and "the last report is not written" in warnings[0], log
