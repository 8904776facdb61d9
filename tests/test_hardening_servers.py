"""Hardening on the real servers: hooks that raise SystemExit, health probes while closing,
a SIGTERM during Daphne's lazy startup."""

from __future__ import annotations

import signal

import pytest

from .servers import (
    in_background,
    lifespan_complaints,
    running,
)

pytestmark = pytest.mark.server


def test_async_hooks_raising_systemexit_are_named_and_the_server_stops_as_usual() -> None:
    with running("uvicorn", app="tests.project.asgi_exit_hooks:application") as srv:
        srv.get("/pid/")
        srv.signal()
        code = srv.wait_exit(10)
        log = srv.log()
        assert code in (0, -signal.SIGTERM), log  # as without the hooks, not exit 3
        assert "hook tests.project.asgi_exit_hooks.exits_when_draining raised SystemExit" in log
        assert (
            "hook tests.project.asgi_exit_hooks.interrupts_on_shutdown raised KeyboardInterrupt"
            in log
        )
        assert len(srv.events("shutdown")) == 1  # the hooks after them ran
        assert srv.events("lifespan-exit")
        assert "shutdown complete" in log
        assert lifespan_complaints(log) == []


def test_while_closing_liveness_answers_200_and_readiness_its_own_503() -> None:
    with running("uvicorn", graceful={"GRACE_PERIOD": 5}) as srv:
        in_flight = in_background(srv.get, "/slow/?s=2")
        srv.wait_event("slow-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        live, ready, other = (
            srv.get(p, timeout=3) for p in ("/health/live/", "/health/ready/", "/pid/")
        )
        assert in_flight.result(timeout=10).status_code == 200
        srv.wait_exit(10)
    assert (live.status_code, live.json()) == (200, {"phase": "closing"})
    assert (ready.status_code, ready.json()) == (503, {"phase": "closing"})
    assert other.status_code == 503 and other.headers["connection"] == "close"
