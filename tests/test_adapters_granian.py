"""Granian specifics: accepting until STOPPED, hung requests, asginl, signals; the fallback.

The tests of Granian's process and signal handling run with both interfaces the app
speaks: ``asgi`` ("granian") and RSGI, Granian's default ("granian-rsgi"): the worker
runs another serve function for each, whose stop the adapter must find.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import override_settings

from django_graceful._core.lifecycle import Lifecycle
from django_graceful.adapters import granian

from .servers import (
    Server,
    answered,
    get_or_error,
    in_background,
)

server = pytest.mark.server

LIFESPAN = ["tests.project.lifespan.resources"]
#: Granian, by the interface it speaks to the app (see tests/servers.py).
GRANIANS = ("granian", "granian-rsgi")
granians = pytest.mark.parametrize("granian_server", GRANIANS)


@contextlib.contextmanager
def started(srv: Server, *, interface: str | None = None) -> Iterator[Server]:
    """``srv`` started, with ``--interface interface`` instead of the server's own if given;
    killed after."""
    if interface is not None:
        srv.cmd[srv.cmd.index("--interface") + 1] = interface
    try:
        yield srv.start()
    finally:
        srv.kill()


def ctrl_c(srv: Server) -> None:
    """What Ctrl-C in a terminal does: SIGINT to the whole process group."""
    assert srv.proc is not None
    if srv.signalled_at is None:
        srv.signalled_at = time.monotonic()
    os.killpg(srv.proc.pid, signal.SIGINT)


def budget_of(graceful: dict[str, Any]) -> float:
    """The shutdown budget the server computes for these settings (same project hooks)."""
    with override_settings(GRACEFUL={"LIFESPAN": LIFESPAN, **graceful}):
        return Lifecycle().budget()


def worker_clients(srv: Server, count: int) -> list[httpx.Client]:
    """One keep-alive client per worker, in Granian's worker order (worker-1 first)."""
    pids = [int(p) for p in re.findall(r"Spawning worker-\d+ with PID: (\d+)", srv.log())]
    assert len(pids) == count, srv.log()
    clients: dict[int, httpx.Client] = {}
    for _ in range(100):  # the kernel picks the worker of each new connection
        client = srv.client(timeout=30)
        pid = client.get("/pid/").json()["pid"]
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
        if len(clients) == count:
            return [clients[pid] for pid in pids]
    pytest.fail(f"100 connections reached only workers {sorted(clients)} of {pids}")


@contextlib.contextmanager
def two_workers(granian_server: str) -> Iterator[tuple[Server, list[httpx.Client]]]:
    """Granian with two workers (a grace of 30 s, a cancel of 1 s), both started, and a
    keep-alive client to each, worker-1's first; all closed after."""
    graceful = {"GRACE_PERIOD": 30, "CANCEL_TIMEOUT": 1}
    clients: list[httpx.Client] = []
    with started(Server(granian_server, graceful=graceful, workers=2)) as srv:
        try:
            srv.wait_event("startup", count=2, timeout=20)
            clients = worker_clients(srv, 2)
            yield srv, clients
        finally:
            for client in clients:
                client.close()


@server
@granians
def test_a_request_sent_while_closing_gets_503_because_granian_still_accepts(
    granian_server: str,
) -> None:
    with started(Server(granian_server, graceful={"GRACE_PERIOD": 5})) as srv:
        srv.get("/pid/")
        in_flight = in_background(srv.get, "/slow/?s=2")
        srv.wait_event("slow-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        late = get_or_error(srv, "/pid/", timeout=3)  # a new connection
        assert isinstance(late, httpx.Response), late  # not refused: Granian still accepts
        assert late.status_code == 503
        assert late.headers["connection"] == "close"
        assert in_flight.result(timeout=10).status_code == 200
        assert srv.wait_exit(10) == 0
        assert srv.exit_after < 3, srv.log()


@server
def test_asginl_starts_at_the_first_request_and_runs_the_shutdown_hooks_at_sigterm() -> None:
    with started(Server("granian", graceful={"GRACE_PERIOD": 5}), interface="asginl") as srv:
        assert srv.events("startup") == []  # no lifespan: nothing before the first request
        first = srv.get("/state/")
        assert first.status_code == 200
        assert first.json()["pool"] == f"pool-of-{first.json()['pid']}"
        response = in_background(get_or_error, srv, "/slow/?s=1")
        srv.wait_event("slow-begin")
        srv.signal()
        ready = srv.get("/health/ready/")
        answered(response, 200, timeout=10)
        code = srv.wait_exit(10)
        log = srv.log()
        assert ready.status_code == 503, log  # draining began at the signal
        assert srv.events("shutdown-started")[0]["trigger"] == "SIGTERM"
        assert len(srv.events("shutdown")) == 1 and len(srv.events("lifespan-exit")) == 1
        assert code == 0, log
        assert srv.exit_after < 4, log  # the 1 s request, not the 5 s grace


@server
def test_asginl_startup_failure_stops_granian_with_an_error() -> None:
    env = {"GRACEFUL_TEST_FAIL_STARTUP": "1"}
    with started(Server("granian", env=env), interface="asginl") as srv:
        first = get_or_error(srv, "/pid/", timeout=5)
        srv.signalled_at = time.monotonic()
        code = srv.wait_exit(10)
        log = srv.log()
        assert isinstance(first, httpx.Response) and first.status_code == 503, (first, log)
        assert code != 0, log
        assert "cache warm-up failed (test)" in log
        assert log.count("startup failed: startup hook") == 1  # started (and failed) once
        assert srv.events("lifespan-exit")  # what was entered is closed again
        assert srv.exit_after < 3, log


@server
@granians
def test_ctrl_c_three_times_drains_once_and_does_not_block_the_worker(granian_server: str) -> None:
    with started(Server(granian_server, graceful={"GRACE_PERIOD": 5})) as srv:
        srv.get("/pid/")
        response = in_background(get_or_error, srv, "/slow/?s=2")
        srv.wait_event("slow-begin")
        for _ in range(3):  # each: SIGINT to the main and the worker, SIGTERM from the main
            ctrl_c(srv)
            time.sleep(0.1)
        answered(response, 200, timeout=10)
        code = srv.wait_exit(10)
        log = srv.log()
        assert "shutdown escalated" not in log  # all within a second: one Ctrl-C
        assert code == 0, log
        assert srv.exit_after < 3.5, log


@server
@granians
def test_a_second_signal_to_the_main_process_reaches_every_worker(granian_server: str) -> None:
    with two_workers(granian_server) as (srv, clients):
        responses = [in_background(c.get, "/slow/?s=600") for c in clients]
        srv.wait_event("slow-begin", count=2)
        srv.signal()
        srv.wait_event("shutdown-started", count=2)
        time.sleep(1.2)  # a repeat within 1 s is the same signal
        srv.signal(signal.SIGTERM)
        code = srv.wait_exit(10)
        log = srv.log()
        assert log.count("another signal reached Granian's main process") == 2, log
        assert len(srv.events("slow-cleanup")) == 2
        assert [r.result(timeout=5).status_code for r in responses] == [503, 503]
        assert code == 0, log
        assert srv.exit_after < 4, log


@server
@granians
def test_a_worker_that_finishes_first_does_not_hurry_the_other(granian_server: str) -> None:
    # Granian's main process waits for worker-1 first: its exit wakes the main process,
    # which must not look like another signal to worker-2.
    with two_workers(granian_server) as (srv, (first, second)):
        short = in_background(first.get, "/slow/?s=1")
        long = in_background(second.get, "/slow/?s=3")
        srv.wait_event("slow-begin", count=2)
        srv.signal()
        assert short.result(timeout=10).status_code == 200
        assert long.result(timeout=10).status_code == 200
        code = srv.wait_exit(10)
        log = srv.log()
        assert "shutdown escalated" not in log, log
        assert not srv.events("slow-cancelled")
        assert code == 0, log


@server
@granians
def test_a_sigterm_while_the_worker_imports_the_app_is_not_lost(granian_server: str) -> None:
    # Granian's forked worker keeps its main process's handler until after the import:
    # alone, Granian would swallow this SIGTERM and its main process would wait for ever.
    app = "tests.project.asgi_slow_import:application"
    srv = Server(granian_server, app=app, env={"GRACEFUL_TEST_IMPORT_DELAY": "2"})
    try:
        srv.start(wait=False)
        srv.wait_event("import-begin", timeout=20)
        srv.signal()
        code = srv.wait_exit(10)
        log = srv.log()
        assert "told to stop while this worker started" in log, log
        assert srv.events("startup") and srv.events("shutdown") and srv.events("lifespan-exit")
        assert code == 0, log
        assert srv.exit_after < 4, log  # the rest of the 2 s import, startup, an idle drain
    finally:
        srv.kill()


def test_the_driver_is_chosen_only_where_granian_runs() -> None:
    assert not granian.running({})
    assert granian.running({"granian.server.common": granian})  # type: ignore[dict-item]


@server
@pytest.mark.parametrize("workers", [1, 2], ids=["granian-rsgi-1", "granian-rsgi-2"])
def test_an_rsgi_startup_failure_stops_granian_with_an_error_that_says_why(workers: int) -> None:
    # __rsgi_init__ runs the startup: when it fails the worker ends before it serves, and
    # Granian stops the others and exits non-zero (a deploy sees the failure).
    env = {"GRACEFUL_TEST_FAIL_STARTUP": "1"}
    srv = Server("granian-rsgi", env=env, workers=workers)
    try:
        srv.start(wait=False)
        srv.signalled_at = time.monotonic()
        code = srv.wait_exit(20)
        log = srv.log()
        assert code != 0, log
        assert "cache warm-up failed (test)" in log
        # Once per worker that got that far (Granian may stop the second one before).
        assert 1 <= log.count("startup failed: startup hook") <= workers, log
        assert srv.events("lifespan-exit")  # what was entered is closed again
        assert srv.exit_after < 10, log
    finally:
        srv.kill()
