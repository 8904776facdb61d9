"""Hypercorn specifics: its worker processes, signals sent to them, its exit status."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest

from django_graceful.adapters import hypercorn as adapter

from .servers import Server, get_or_error, in_background, running

server = pytest.mark.server


class RawRequest:
    """One GET on a connection of its own: a test can see which worker took it, and drop it."""

    def __init__(self, srv: Server, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        self.sock.sendall(request.encode())

    def status(self, timeout: float) -> int:
        """The response's status code, once the server has sent all of it and closed."""
        self.sock.settimeout(timeout)
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.sock.close()
        assert data.startswith(b"HTTP/1.1 "), data[:200]
        return int(data.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


def slow_request_on(
    srv: Server, seconds: float, *, avoid_pid: int | None = None
) -> tuple[RawRequest, int]:
    """A /slow/ request in flight, on a worker other than ``avoid_pid``; and that worker's pid."""
    for _ in range(30):
        before = len(srv.events("slow-begin"))
        request = RawRequest(srv, f"/slow/?s={seconds}")
        pid = srv.wait_event("slow-begin", count=before + 1)[-1]["pid"]
        if pid != avoid_pid:
            return request, pid
        request.close()  # the view is cancelled by the disconnect; try another connection
    raise AssertionError("every connection went to the same worker")


@server
def test_two_workers_each_finish_their_request_though_the_parent_terminates_the_later_one() -> None:
    # Hypercorn's parent terminate()s the other workers as soon as one worker exits.
    with running("hypercorn", workers=2, graceful={"GRACE_PERIOD": 10}) as srv:
        srv.wait_event("startup", count=2, timeout=20)
        short, early_pid = slow_request_on(srv, 1.5)
        long, late_pid = slow_request_on(srv, 4, avoid_pid=early_pid)
        srv.signal()
        assert short.status(timeout=10) == 200
        assert long.status(timeout=10) == 200
        assert srv.wait_exit(10) == 0
        assert srv.exit_after < 5.5
        log = srv.log()
        assert f"SIGTERM to worker pid {late_pid}: shutdown already under way" in log
        ended = {e["pid"]: e["t"] for e in srv.events("slow-end")}
        stopped = {e["pid"]: e["t"] for e in srv.events("shutdown")}
        assert stopped[early_pid] < ended[late_pid]  # the early worker was gone by then
        assert not [e for e in srv.events("slow-cancelled") if e["pid"] == late_pid]


@server
@pytest.mark.parametrize("workers", [None, 2])
def test_sigterm_to_the_process_group_drains_instead_of_killing(workers: int | None) -> None:
    # systemd (KillMode=control-group) and `kill -- -PGID` signal the workers too.
    with running("hypercorn", workers=workers, graceful={"GRACE_PERIOD": 5}) as srv:
        srv.wait_engaged(workers or 1)  # every worker, not only the one that answers first
        response = in_background(srv.get, "/slow/?s=1.5")
        srv.wait_event("slow-begin")
        srv.signalled_at = time.monotonic()
        os.killpg(srv.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        assert response.result(timeout=10).status_code == 200
        assert srv.wait_exit(10) == 0
        assert srv.events("slow-end") and not srv.events("slow-cancelled")
        assert len(srv.events("shutdown-started")) == len(srv.events("startup"))


@server
def test_sigterm_to_the_process_group_still_cancels_a_600_second_request_in_time() -> None:
    with running("hypercorn", graceful={"GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1}) as srv:
        srv.get("/pid/")
        response = in_background(get_or_error, srv, "/slow/?s=600")
        srv.wait_event("slow-begin")
        srv.signalled_at = time.monotonic()
        os.killpg(srv.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        assert srv.wait_exit(10) == 0
        assert srv.exit_after < 3.5, srv.log()
        assert srv.events("slow-cleanup")
        response.result(timeout=5)


@server
def test_a_second_ctrl_c_escalates_in_every_worker() -> None:
    # Ctrl-C reaches the whole process group; hypercorn's workers ignore SIGINT, and only
    # its parent's shared event tells them, once per signal.
    with running("hypercorn", workers=2, graceful={"GRACE_PERIOD": 30, "CANCEL_TIMEOUT": 1}) as srv:
        srv.wait_event("startup", count=2, timeout=20)
        first, first_pid = slow_request_on(srv, 600)
        second, _ = slow_request_on(srv, 600, avoid_pid=first_pid)
        srv.signalled_at = time.monotonic()
        os.killpg(srv.proc.pid, signal.SIGINT)  # type: ignore[union-attr]
        srv.wait_event("shutdown-started", count=2)
        time.sleep(1.1)  # a repeat within 1 s is the same signal
        os.killpg(srv.proc.pid, signal.SIGINT)  # type: ignore[union-attr]
        assert srv.wait_exit(10) == 0
        assert srv.exit_after < 4, srv.log()
        began = srv.events("shutdown-started")[0]["t"]
        assert len([e for e in srv.events("slow-cleanup") if e["t"] > began]) == 2
        assert first.status(timeout=5) == second.status(timeout=5) == 503


@server
def test_a_worker_sent_sigterm_alone_drains_and_hypercorn_replaces_it() -> None:
    with running("hypercorn", workers=2, graceful={"GRACE_PERIOD": 5}) as srv:
        started = srv.wait_event("startup", count=2, timeout=20)
        request, pid = slow_request_on(srv, 1.5)
        os.kill(pid, signal.SIGTERM)
        assert request.status(timeout=10) == 200
        replacement = srv.wait_event("startup", count=3, timeout=20)[-1]["pid"]
        assert replacement not in {e["pid"] for e in started}
        assert srv.get("/pid/").status_code == 200
        srv.signal()
        assert srv.wait_exit(10) == 0


@server
def test_a_task_that_swallows_every_cancel_does_not_keep_hypercorn_alive() -> None:
    # Hypercorn itself would wait for it forever (Python 3.12+: hypercorn#308).
    with running("hypercorn", graceful={"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 1}) as srv:
        srv.get("/pid/")
        in_background(get_or_error, srv, "/stubborn/")
        srv.wait_event("stubborn-begin")
        srv.signal()
        assert srv.wait_exit(10) == 0
        assert srv.exit_after < 3.5, srv.log()
        assert "hung at shutdown: request GET /stubborn/" in srv.log()
        assert "would keep hypercorn from ever exiting" in srv.log()


@server
def test_startup_failure_of_one_worker_stops_hypercorn_and_says_why() -> None:
    srv = Server("hypercorn", app="tests.project.asgi_fail_once:application", workers=2)
    srv.env["GRACEFUL_TEST_FAIL_ONCE"] = str(srv.dir / "failed-once")
    try:
        srv.start()  # the healthy worker listens; the other fails about 2 s later
        response = in_background(srv.get, "/slow/?s=3")
        srv.wait_event("slow-begin")
        srv.signalled_at = time.monotonic()
        assert srv.wait_exit(20) == 0  # hypercorn#269: the parent drops the worker's status
        assert response.result(timeout=5).status_code == 200  # the healthy worker drained
        log = srv.log()
        assert "cache warm-up failed (test)" in log
        assert "exits 0 all the same (hypercorn#269)" in log
        assert len(srv.events("shutdown")) == 1  # the healthy worker's
    finally:
        srv.kill()


@server
@pytest.mark.parametrize("second", [False, True])
def test_with_workers_0_one_process_drains_and_escalates_on_its_own_signals(
    second: bool,
) -> None:
    graceful = {"GRACE_PERIOD": 30 if second else 2, "CANCEL_TIMEOUT": 1}
    srv = Server("hypercorn", graceful=graceful)
    srv.cmd += ["--workers", "0"]
    try:
        srv.start()
        assert srv.get("/pid/").json()["pid"] == srv.proc.pid  # type: ignore[union-attr]
        response = in_background(get_or_error, srv, "/slow/?s=600")
        srv.wait_event("slow-begin")
        srv.signal()
        if second:
            srv.wait_event("shutdown-started")
            time.sleep(1.1)
            srv.signal(signal.SIGINT)
        assert srv.wait_exit(10) == 0
        # the cancel of the grace's end (or of the second signal), not the grace of 30 s nor
        # the watchdog; with room for a loaded machine
        assert srv.exit_after < (4.5 if second else 5.5), srv.log()
        assert srv.events("slow-cleanup")
        response.result(timeout=5)
    finally:
        srv.kill()


# -- in-process: the parent's event as a worker sees it -----------------------------------


def set_in_thread(event: Any) -> None:
    """``event.set()``, failing if it blocks (the parent must never wait for a worker)."""
    thread = threading.Thread(target=event.set, daemon=True)
    thread.start()
    thread.join(2)
    assert not thread.is_alive(), "set() blocked"


def test_every_set_by_the_parent_is_seen_and_none_waits_for_a_worker() -> None:
    event = multiprocessing.get_context("spawn").Event()
    worker = adapter.ParentEvent(event)
    gone = adapter.ParentEvent(event)  # a worker that watched, then died
    assert worker.watch_sets() and gone.watch_sets()
    assert not worker.set_since_watch()
    set_in_thread(event)
    assert worker.set_since_watch()
    assert not worker.set_since_watch()
    assert worker.watch_sets()
    set_in_thread(event)  # the second signal
    assert worker.set_since_watch()


def test_hypercorn_sees_the_event_only_once_released() -> None:
    event = multiprocessing.get_context("spawn").Event()
    worker = adapter.ParentEvent(event)
    worker.hold()
    event.set()
    assert worker.is_set() and not event.is_set()
    worker.released = True
    assert event.is_set()
    worker.released = False
    worker.unhold()
    assert event.is_set()


def test_not_running_under_hypercorn_in_process() -> None:
    import hypercorn.asyncio.run  # noqa: F401

    assert not adapter.running(sys.modules)
