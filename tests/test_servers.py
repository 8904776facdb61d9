"""The whole lifecycle on the real servers: startup, draining, cancelling, exit."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from .servers import (
    SERVERS,
    WORKER_SERVERS,
    Server,
    get_or_error,
    in_background,
    lifespan_complaints,
    running,
)

pytestmark = pytest.mark.server

APPS = {
    "django": "tests.project.asgi:application",
    "channels": "tests.project.asgi_channels:application",
}


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("server", SERVERS)
def test_startup_runs_once_and_state_reaches_the_view(server: str, app: str) -> None:
    with running(server, app=APPS[app]) as srv:
        first = srv.get("/state/")
        second = srv.get("/state/")
        assert first.status_code == 200, first.text
        assert first.json()["pool"] == f"pool-of-{first.json()['pid']}"
        assert second.json() == first.json()
        assert len(srv.events("startup")) == 1
        assert len(srv.events("lifespan-enter")) == 1
        srv.signal()
        srv.wait_exit(10)
        assert len(srv.events("shutdown")) == 1
        assert len(srv.events("lifespan-exit")) == 1
        assert lifespan_complaints(srv.log()) == []


@pytest.mark.parametrize("server", WORKER_SERVERS)
def test_each_worker_runs_its_own_lifecycle(server: str) -> None:
    with running(server, workers=2) as srv:
        started = srv.wait_event("startup", count=2, timeout=20)
        assert len({e["pid"] for e in started}) == 2
        srv.wait_engaged(2)
        srv.signal()
        srv.wait_exit(15)
        stopped = srv.events("shutdown")
        assert sorted(e["pid"] for e in stopped) == sorted(e["pid"] for e in started)
        assert lifespan_complaints(srv.log()) == []


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_lets_a_one_second_request_finish(server: str) -> None:
    with running(server, graceful={"GRACE_PERIOD": 5}) as srv:
        srv.get("/pid/")  # started (lazily on Daphne)
        response = in_background(srv.get, "/slow/?s=1&size=100000")
        srv.wait_event("slow-begin")
        srv.signal()
        result = response.result(timeout=10)
        assert result.status_code == 200
        assert len(result.content) == 100000
        srv.wait_exit(10)
        assert srv.events("slow-end") and not srv.events("slow-cancelled")
        assert "took too long to shut down" not in srv.log()


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_cancels_a_600_second_request_within_the_budget(server: str) -> None:
    graceful = {"GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1}
    with running(server, graceful=graceful) as srv:
        srv.get("/pid/")
        response = in_background(get_or_error, srv, "/slow/?s=600")
        srv.wait_event("slow-begin")
        srv.signal()
        srv.wait_exit(10)
        assert srv.exit_after < 3.5, srv.log()
        assert srv.events("slow-cancelled") and srv.events("slow-cleanup")
        cancelled_at = srv.events("slow-cancelled")[0]["t"]
        shutdown_at = srv.events("shutdown-started")[0]["t"]
        assert 1.9 < cancelled_at - shutdown_at < 2.6  # after the grace, not before
        response.result(timeout=5)


@pytest.mark.parametrize("server", SERVERS)
def test_readiness_answers_503_while_draining_and_requests_are_still_served(server: str) -> None:
    with running(server, graceful={"DRAIN_DELAY": 1.5, "GRACE_PERIOD": 3}) as srv:
        assert srv.get("/health/ready/").status_code == 200
        srv.signal()
        srv.wait_event("shutdown-started")
        ready = srv.get("/health/ready/")
        served = srv.get("/pid/")
        assert ready.status_code == 503
        assert ready.json() == {"phase": "draining"}
        assert served.status_code == 200
        srv.wait_exit(10)
        assert srv.exit_after >= 1.4


@pytest.mark.parametrize("server", SERVERS)
def test_a_raising_and_a_hanging_hook_neither_stop_the_others_nor_hold_the_exit(
    server: str,
) -> None:
    env = {"GRACEFUL_TEST_HANG_HOOK": "1", "GRACEFUL_TEST_RAISE_HOOK": "1"}
    with running(server, graceful={"GRACE_PERIOD": 1}, env=env) as srv:
        srv.get("/pid/")
        srv.signal()
        srv.wait_exit(10)
        log = srv.log()
        assert srv.events("hanging-hook")
        assert len(srv.events("shutdown")) == 1  # the hook after the raising one ran
        assert srv.exit_after < 2.5  # nothing in flight: hooks (0.5 s bound) + exit
        assert "hook tests.project.hooks.raising_hook raised RuntimeError" in log
        assert "producer flush failed (test)" in log
        assert "hook tests.project.hooks.hanging_hook did not finish within 0.5 s" in log
        assert srv.events("lifespan-exit")


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_sent_after_draining_began_gets_503_or_a_refused_connection(
    server: str,
) -> None:
    with running(server, graceful={"GRACE_PERIOD": 5}) as srv:
        srv.get("/pid/")
        in_flight = in_background(srv.get, "/slow/?s=2")
        srv.wait_event("slow-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        late = get_or_error(srv, "/pid/", timeout=3)  # never a hang
        if isinstance(late, httpx.Response):
            assert late.status_code == 503
            assert late.headers["connection"] == "close"
        else:
            assert isinstance(late, httpx.ConnectError), late  # listener closed: refused
        assert in_flight.result(timeout=10).status_code == 200
        srv.wait_exit(10)


@pytest.mark.parametrize("server", SERVERS)
def test_a_second_signal_skips_to_cancelling(server: str) -> None:
    with running(server, graceful={"GRACE_PERIOD": 30, "CANCEL_TIMEOUT": 1}) as srv:
        srv.get("/pid/")
        response = in_background(get_or_error, srv, "/slow/?s=600")
        srv.wait_event("slow-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        time.sleep(1.1)  # a repeat within 1 s is the same signal (Ctrl-C reaches workers too)
        srv.signal(signal.SIGINT if server != "hypercorn" else signal.SIGTERM)
        srv.wait_exit(10)
        assert srv.exit_after < 4, srv.log()
        assert srv.events("slow-cleanup")
        response.result(timeout=5)


@pytest.mark.parametrize("server", SERVERS)
def test_startup_failure_is_reported_and_nothing_is_served(server: str) -> None:
    env = {"GRACEFUL_TEST_FAIL_STARTUP": "1"}
    # Hypercorn's multiprocess parent exits 0 whatever its workers do (hypercorn#269):
    # one in-process worker (what `manage.py serve` runs) exits non-zero.
    srv = Server(server, env=env, workers=0 if server == "hypercorn" else None)
    try:
        srv.start(wait=False)
        if server == "daphne":  # no lifespan: the first request starts, fails, and gets 503
            srv.wait_listening()
            first = srv.get("/pid/")
            second = srv.get("/pid/")
            assert first.status_code == second.status_code == 503
            assert srv.log().count("startup failed:") == 1  # logged once, not per request
            assert first.text == second.text == "Service Unavailable: startup failed.\n"
        else:
            srv.signalled_at = time.monotonic()
            code = srv.wait_exit(20)
            assert code != 0
            assert "cache warm-up failed (test)" in srv.log()
        assert srv.events("lifespan-exit")  # what was entered is closed again
    finally:
        srv.kill()
