"""Daphne's ``runserver`` (Channels' development setup): a reload and Ctrl-C run the shutdown."""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import pytest

from .servers import Server, answered, get_or_error, in_background

pytestmark = pytest.mark.server

#: What the driver said before it knew runserver: no signal was ever coming there.
NOT_MAIN_THREAD = "not in the main thread"


def runserver(
    *args: str, background: bool = False, graceful: dict[str, float] | None = None
) -> Server:
    """The test project on Daphne's ``runserver`` (``daphne`` first in INSTALLED_APPS), with
    the autoreloader unless ``--noreload``, watching a file of this test's own."""
    srv = Server("daphne", graceful=graceful, env={"GRACEFUL_TEST_RUNSERVER": "1"})
    srv.reload_file = srv.dir / "reload.txt"  # type: ignore[attr-defined]
    srv.reload_file.write_text("")  # type: ignore[attr-defined]
    srv.env["GRACEFUL_TEST_RELOAD_FILE"] = str(srv.reload_file)  # type: ignore[attr-defined]
    if background:
        srv.env["GRACEFUL_TEST_BACKGROUND"] = "1"
    srv.cmd = [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{srv.port}", *args]
    try:
        return srv.start()
    except BaseException:
        srv.kill()
        raise


def serving_pid(srv: Server, other_than: int | None = None, timeout: float = 30) -> int:
    """The pid of the process that answers ``/pid/`` (other than ``other_than``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = srv.get("/pid/", timeout=2)
            if response.status_code == 200 and response.json()["pid"] != other_than:
                return int(response.json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no process other than {other_than} answered:\n{srv.log()}")


def events_of(srv: Server, pid: int) -> list[str]:
    return [event["event"] for event in srv.events() if event["pid"] == pid]


def ctrl_c(srv: Server) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    assert srv.proc is not None
    srv.signalled_at = time.monotonic()
    os.killpg(srv.proc.pid, signal.SIGINT)


def test_a_reload_runs_the_shutdown_then_the_new_process_serves() -> None:
    srv = runserver(background=True)
    try:
        first = serving_pid(srv)
        srv.wait_event("startup")
        srv.reload_file.write_text("changed")  # type: ignore[attr-defined]
        second = serving_pid(srv, other_than=first)
        events = events_of(srv, first)
        for done in ("shutdown", "lifespan-exit", "flusher-stopped", "ticker-stopped"):
            assert done in events, (done, events, srv.log())
        started = [e for e in srv.events("shutdown-started") if e["pid"] == first]
        assert "reload" in started[0]["trigger"] and "reload.txt" in started[0]["trigger"]
        srv.wait_event("startup", count=2)
        assert "startup" in events_of(srv, second)
        log = srv.log()
        assert NOT_MAIN_THREAD not in log, log
        assert log.count("runserver under the autoreloader") == 2, log  # once per process
        # New clients wait for the next process (the door shut at the stop), not a 503.
        assert "they try again when daphne's next process listens" in log, log
        assert "Traceback" not in log, log
    finally:
        srv.kill()


@pytest.mark.parametrize(
    ("started", "in_flight"),
    [(True, True), (True, False), (False, False)],
    ids=["request-in-flight", "idle", "unstarted"],
)
def test_ctrl_c_runs_the_hooks_then_exits_as_without_us(started: bool, in_flight: bool) -> None:
    # Idle, the shutdown is over before the reloader passes Ctrl-C on (FORWARD_AFTER): that
    # copy must not end the exiting process by SIGINT (status -2, the reloader's 254).
    # Before any request ("unstarted") django_graceful has not started: Ctrl-C is as ever.
    srv = runserver(background=True)
    try:
        if not started:
            time.sleep(1)  # the autoreloader's handlers are in place
            ctrl_c(srv)
            assert srv.wait_exit(20) == 0, srv.log()
            assert srv.events() == [] and "Traceback" not in srv.log(), srv.log()
            return
        pid = serving_pid(srv)
        slow = in_background(get_or_error, srv, "/slow/?s=1.5") if in_flight else None
        if in_flight:
            srv.wait_event("slow-begin")
        ctrl_c(srv)
        if slow is not None:
            answered(slow, 200, srv.log(), timeout=15)
        assert srv.wait_exit(20) == 0, srv.log()
        events = events_of(srv, pid)
        for done in ("shutdown", "lifespan-exit", "flusher-stopped", "ticker-stopped"):
            assert done in events, (done, events, srv.log())
        if in_flight:
            # The hooks ran after the request ended: not cut short by the reloader.
            assert events.index("slow-end") < events.index("shutdown")
        log = srv.log()
        # The reloader passed Ctrl-C on too: the server ignored that copy.
        assert "escalated" not in log, log
        assert NOT_MAIN_THREAD not in log, log
        assert "Traceback" not in log, log
    finally:
        srv.kill()


def test_noreload_stops_on_ctrl_c_as_before() -> None:
    srv = runserver("--noreload")
    try:
        pid = serving_pid(srv)
        srv.wait_engaged()
        ctrl_c(srv)
        assert srv.wait_exit(20) == 0
        events = events_of(srv, pid)
        assert "shutdown" in events and "lifespan-exit" in events, (events, srv.log())
        log = srv.log()
        assert "SIGINT received: draining" in log, log
        assert "autoreloader" not in log and NOT_MAIN_THREAD not in log, log
    finally:
        srv.kill()


def test_sigint_to_the_reloader_alone_reaches_the_server_and_runs_the_hooks() -> None:
    # An IDE's stop button signals the process it started: the reloader, not its child.
    srv = runserver()
    try:
        pid = serving_pid(srv)
        srv.wait_engaged()
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(20) == 0
        events = events_of(srv, pid)
        assert "shutdown" in events and "lifespan-exit" in events, (events, srv.log())
        assert "escalated" not in srv.log(), srv.log()
    finally:
        srv.kill()


@pytest.mark.parametrize(
    ("in_flight", "to_group"),
    [(True, False), (False, False), (True, True)],
    ids=["request-in-flight", "idle", "to-the-process-group"],
)
def test_sigterm_to_the_reloader_runs_the_hooks_then_every_process_exits_0(
    in_flight: bool, to_group: bool
) -> None:
    # docker stop: SIGTERM to the container's first process, the reloader, alone. Django
    # would kill the server's process at once; it gets the budget instead, as on Ctrl-C.
    # To the process group (a supervisor), the server's process gets it twice: a repeat.
    srv = runserver(background=True, graceful={"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 0.5})
    try:
        pid = serving_pid(srv)
        srv.wait_event("startup")
        slow = in_background(get_or_error, srv, "/slow/?s=0.5") if in_flight else None
        if slow is not None:
            srv.wait_event("slow-begin")
        if to_group:
            os.killpg(srv.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        else:
            srv.signal(signal.SIGTERM)
        if slow is not None:
            answered(slow, 200, srv.log(), timeout=15)
        assert srv.wait_exit(15) == 0, srv.log()
        with pytest.raises(ProcessLookupError):  # the server's process is gone too
            os.killpg(srv.proc.pid, 0)  # type: ignore[union-attr]
        events = events_of(srv, pid)
        for done in ("shutdown", "lifespan-exit", "flusher-stopped", "ticker-stopped"):
            assert done in events, (done, events, srv.log())
        if in_flight:
            assert events.index("slow-end") < events.index("shutdown")
        log = srv.log()
        assert "SIGTERM: the server stops gracefully" in log, log
        assert "escalated" not in log and "Traceback" not in log, log
    finally:
        srv.kill()


def test_a_sync_view_still_running_does_not_hold_the_reload() -> None:
    # Python's exit joins the threads of sync code: a hung one would hold it for ever.
    srv = runserver(graceful={"GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 0.5})
    try:
        first = serving_pid(srv)
        busy = in_background(get_or_error, srv, "/hangs/busy/?s=120")
        srv.wait_event("busy-begin")
        srv.reload_file.write_text("changed")  # type: ignore[attr-defined]
        serving_pid(srv, other_than=first, timeout=30)
        busy.result(timeout=10)
        assert "shutdown" in events_of(srv, first), srv.log()
        log = srv.log()
        assert "hung at shutdown: request GET /hangs/busy/" in log, log
        assert "the process's exit is held" in log and "ending the process with status 3" in log
    finally:
        srv.kill()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-the-reloader"])
def test_a_stop_during_a_reloads_drain_escalates_and_stops_the_server(stop: str) -> None:
    srv = runserver()
    try:
        pid = serving_pid(srv)
        slow = in_background(get_or_error, srv, "/slow/?s=30")
        srv.wait_event("slow-begin")
        srv.reload_file.write_text("changed")  # type: ignore[attr-defined]
        srv.wait_event("shutdown-started")  # draining: the grace waits for the request
        if stop == "ctrl-c":
            ctrl_c(srv)
        else:
            srv.signal(signal.SIGTERM)
        assert srv.wait_exit(20) == 0, srv.log()
        slow.result(timeout=10)
        events = events_of(srv, pid)
        assert "slow-cancelled" in events and "shutdown" in events, (events, srv.log())
        log = srv.log()
        assert "shutdown escalated: skipping to CANCELLING" in log, log
        signame = "SIGINT" if stop == "ctrl-c" else "SIGTERM"
        assert f"{signame} during the reload: the server exits instead" in log, log
        assert len(srv.events("startup")) == 1, srv.events()  # no next process
    finally:
        srv.kill()
