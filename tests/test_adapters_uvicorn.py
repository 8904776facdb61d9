"""Uvicorn specifics on the real server: hung requests, --workers, --lifespan off, SIGINT."""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import pytest

from .servers import (
    WATCHDOG_LINE,
    Server,
    answered,
    get_or_error,
    in_background,
    lifespan_complaints,
    start_with,
    stop_holding_a_stubborn_request,
)

#: Exit status of a single uvicorn process: it re-raises SIGTERM after its shutdown
#: (killed by SIGTERM) and swallows the KeyboardInterrupt of SIGINT (0).
CLEAN_EXIT = {signal.SIGTERM: -signal.SIGTERM, signal.SIGINT: 0}


def ctrl_c(srv: Server) -> None:
    """What Ctrl-C in a terminal does: SIGINT to the whole process group."""
    assert srv.proc is not None
    srv.signalled_at = time.monotonic()
    os.killpg(srv.proc.pid, signal.SIGINT)


SERVER = pytest.mark.server
SIGNALS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])


@SERVER
@SIGNALS
def test_a_request_that_swallows_every_cancel_gets_503_and_does_not_hold_the_exit(
    signum: int,
) -> None:
    grace, cancel = 1, 1
    srv = start_with(Server("uvicorn", graceful={"GRACE_PERIOD": grace, "CANCEL_TIMEOUT": cancel}))
    try:
        # The watchdog would end it at budget + 1 s = 14.5 s.
        code, log, response = stop_holding_a_stubborn_request(srv, signum, timeout=20)
        # STOPPED at grace + cancel (the hooks return at once), then uvicorn stops (< 0.3 s),
        # and after a SIGINT the teardown guard waits 0.5 s; 1 s slack for a busy machine.
        assert srv.exit_after < grace + cancel + 2, log
        assert srv.events("stubborn-swallowed")
        assert "Application shutdown complete." in log
        assert lifespan_complaints(log) == []
        assert answered(response, 503, log).headers["connection"] == "close"
        # SIGTERM: uvicorn's own re-raise. SIGINT: the loop's teardown would wait for the
        # task forever; the process ends by the SIGINT instead (130 in a shell).
        assert code == -signum, log
        if signum == signal.SIGINT:
            assert "ending the process by SIGINT" in log
    finally:
        srv.kill()


@SERVER
@pytest.mark.parametrize("stop", ["SIGTERM", "ctrl-c"])
def test_two_workers_finish_their_in_flight_requests(stop: str) -> None:
    grace = 10
    srv = start_with(Server("uvicorn", graceful={"GRACE_PERIOD": grace}, workers=2))
    try:
        started = srv.wait_event("startup", count=2, timeout=30)
        workers = {e["pid"] for e in started}
        responses = []
        for _ in range(40):  # until each worker has one in flight; the kernel picks the worker
            responses.append(in_background(get_or_error, srv, "/slow/?s=1"))
            begun = srv.wait_event("slow-begin", count=len(responses))
            if {e["pid"] for e in begun} == workers:
                break
        else:
            pytest.fail(f"all {len(responses)} requests went to one worker: {srv.events()}")
        if stop == "ctrl-c":
            ctrl_c(srv)  # each worker: SIGINT from the tty, then SIGTERM from the parent
        else:
            srv.signal(signal.SIGTERM)
        results = [r.result(timeout=10) for r in responses]
        code = srv.wait_exit(grace + 5)
        log = srv.log()
        assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results), (
            results,
            log,
        )
        assert code == 0, log  # the parent's
        assert sorted(e["pid"] for e in srv.events("shutdown")) == sorted(workers)
        assert len(srv.events("slow-end")) == len(responses)
        assert "shutdown escalated" not in log  # the parent's SIGTERM is the same Ctrl-C
        assert WATCHDOG_LINE not in log
        assert srv.exit_after < grace / 2, log  # once the requests ended, not the grace's end
    finally:
        srv.kill()


@SERVER
@SIGNALS
def test_lifespan_off_starts_at_the_first_request_and_runs_the_shutdown_at_the_signal(
    signum: int,
) -> None:
    srv = start_with(Server("uvicorn", graceful={"GRACE_PERIOD": 5}), "--lifespan", "off")
    try:
        assert srv.events("startup") == []  # nothing before the first request
        first = srv.get("/state/")
        assert first.status_code == 200
        assert first.json()["pool"] == f"pool-of-{first.json()['pid']}"  # started, then served
        assert len(srv.events("startup")) == 1
        response = in_background(get_or_error, srv, "/slow/?s=1")
        srv.wait_event("slow-begin")
        srv.signal(signum)
        answered(response, 200, timeout=10)
        code = srv.wait_exit(10)
        log = srv.log()
        assert srv.events("shutdown-started")[0]["trigger"] == signal.Signals(signum).name
        assert srv.events("shutdown") and srv.events("lifespan-exit")
        assert code == CLEAN_EXIT[signum], log
        # The 1 s request, uvicorn's stop (< 0.3 s), and after SIGINT the interpreter's own
        # exit (0.2-0.5 s on this machine, none after SIGTERM: the process dies by it).
        assert srv.exit_after < 2.5, log
    finally:
        srv.kill()


@SERVER
def test_lifespan_off_without_a_request_stops_at_once() -> None:
    srv = start_with(Server("uvicorn"), "--lifespan", "off")
    try:
        srv.signal()
        code = srv.wait_exit(5)
        assert code == -signal.SIGTERM
        assert srv.exit_after < 3  # at once: not after a shutdown budget (21.5 s)
        assert srv.events() == []  # never started, so nothing to stop
    finally:
        srv.kill()


def test_not_detected_without_a_serving_uvicorn() -> None:
    import uvicorn.server  # noqa: F401  (imported, but not serving: e.g. pytest in-process)

    from django_graceful.adapters import uvicorn as adapter

    assert adapter.running(sys.modules) is False
    assert adapter.Uvicorn.problem(None, (0, 54)) is not None


def test_an_old_uvicorn_is_not_relied_on() -> None:
    from uvicorn import Config
    from uvicorn.server import Server as UvicornServer

    from django_graceful.adapters import uvicorn as adapter

    server = UvicornServer(Config(app=lambda *a: None))
    found = adapter.Uvicorn(server)
    assert adapter.Uvicorn.problem(found, (0, 54)) is None
    assert "older than 0.41" in (adapter.Uvicorn.problem(found, (0, 40)) or "")
    del server.server_state
    assert adapter.Uvicorn.problem(found, (0, 54)) is not None
