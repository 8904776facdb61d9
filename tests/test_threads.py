"""REUSE_SYNC_THREADS: a request's sync code runs on a thread reused from request to
request, never on one another request is still using."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from django_graceful._serving.threads import MAX_IDLE, RequestThread, SyncThreads
from django_graceful.asgi import GracefulASGI

from .inprocess import NO_SIGNALS, Events, request, wait_for
from .servers import in_background, running
from .test_sql import postgres_missing

REUSE = {**NO_SIGNALS, "REUSE_SYNC_THREADS": True}
NO_REUSE = {**NO_SIGNALS, "REUSE_SYNC_THREADS": False}


async def thread_of(app: GracefulASGI, path: str = "/thread/") -> str:
    status, _, body = await request(app, path)
    assert status == 200, body
    return str(json.loads(body)["thread"])


@pytest.mark.django_db(transaction=True)
async def test_sync_views_one_after_another_run_on_reused_threads(
    app: GracefulASGI, settings: Any
) -> None:
    settings.GRACEFUL = REUSE
    names = [await thread_of(app) for _ in range(6)]
    # asgiref hands the loop a call's result a moment before the call has ended in its
    # thread: a request that comes in that moment may take a second thread.
    assert len(set(names)) <= 2, names
    assert all(name.startswith("django_graceful-sync") for name in names)


@pytest.mark.django_db(transaction=True)
async def test_turned_off_each_request_gets_the_thread_django_starts(
    app: GracefulASGI, settings: Any
) -> None:
    settings.GRACEFUL = NO_REUSE
    names = [await thread_of(app) for _ in range(3)]
    assert len(set(names)) == 3
    assert not any(name.startswith("django_graceful-sync") for name in names)


@pytest.mark.django_db(transaction=True)
async def test_requests_at_once_never_share_a_thread(app: GracefulASGI, settings: Any) -> None:
    settings.GRACEFUL = REUSE
    names = await asyncio.gather(*(thread_of(app, "/thread/?s=0.2") for _ in range(3)))
    assert len(set(names)) == 3
    deadline = time.monotonic() + 1
    while len(app._sync_threads) < 3:  # all back, idle, for the next ones
        assert time.monotonic() < deadline, f"{len(app._sync_threads)} of 3 threads back"
        await asyncio.sleep(0.01)


@pytest.mark.django_db(transaction=True)
async def test_a_task_that_outlives_its_request_may_still_call_sync_code(
    app: GracefulASGI, settings: Any, recorded: Events
) -> None:
    settings.GRACEFUL = REUSE
    status, _, _ = await request(app, "/leaves-a-task/")
    assert status == 200
    event = await wait_for(recorded, "late-sync-call")
    assert not event["thread"].startswith("django_graceful-sync")  # a thread of its own


def test_the_pool_keeps_at_most_max_idle_threads() -> None:
    threads = SyncThreads(max_idle=2)
    taken = [threads.take() for _ in range(3)]
    assert len({id(t) for t in taken}) == 3
    for thread in taken:
        threads.give_back(thread)
    assert len(threads) == 2
    assert MAX_IDLE >= 2
    threads.close()
    assert len(threads) == 0


def test_a_busy_thread_goes_back_to_the_pool_only_once_its_work_is_done() -> None:
    # A sync view whose request ended while it still runs keeps its thread: no other
    # request may queue behind it.
    threads = SyncThreads()
    busy = threads.take()
    try:
        work = busy.submit(time.sleep, 0.3)
        threads.give_back(busy)
        assert len(threads) == 0
        assert threads.take() is not busy
        work.result(2)
        assert len(threads) == 1 and threads.take() is busy
    finally:
        busy.shutdown(wait=True)


def test_a_request_thread_knows_when_it_runs_something() -> None:
    thread = RequestThread()
    try:
        assert thread.idle
        future = thread.submit(time.sleep, 0.2)
        assert not thread.idle
        future.result(2)
        assert thread.idle
    finally:
        thread.shutdown(wait=True)


@pytest.mark.django_db(transaction=True)
async def test_a_transaction_left_open_is_closed_before_the_thread_serves_again(
    app: GracefulASGI, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a WSGI server's threads every later query on that thread would fail ("Cannot
    operate on a closed database"): here the next requests there run their queries."""
    settings.GRACEFUL = REUSE
    left_on = await thread_of(app, "/thread/?leave-transaction")
    later = [await thread_of(app, "/thread/?query") for _ in range(6)]
    assert left_on in later, (left_on, later)  # the same thread served again, cleanly
    assert "tests.project.views.sync_thread left a transaction open on database 'default'" in (
        caplog.text
    )


# -- on the wire --------------------------------------------------------------------------

#: Short phases: the exit is bounded by GRACE_PERIOD + CANCEL_TIMEOUT (+ margin).
WIRE = {"REUSE_SYNC_THREADS": True, "GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1}


@pytest.mark.server
@pytest.mark.parametrize("server", ["uvicorn", "granian-rsgi", "daphne"])
def test_a_server_reuses_threads_and_still_drains_a_sync_view_at_sigterm(server: str) -> None:
    with running(server, graceful=WIRE) as srv:
        names = [srv.get("/thread/").json()["thread"] for _ in range(6)]
        assert len(set(names)) <= 2, names
        assert all(name.startswith("django_graceful-sync") for name in names), names
        srv.wait_engaged()
        in_flight = in_background(srv.get, "/thread/?s=0.5&begin")
        srv.wait_event("thread-begin")  # in flight when the signal comes
        srv.signal()
        answer = in_flight.result(10)
        assert answer.status_code == 200, srv.log()
        assert answer.json()["thread"].startswith("django_graceful-sync")
        srv.wait_exit(WIRE["GRACE_PERIOD"] + WIRE["CANCEL_TIMEOUT"] + 3)
        assert "shutdown complete" in srv.log()


#: Concurrent requests in the burst, and how long each holds its thread.
BURST, BURST_SECONDS = 500, 0.5


def threads_of(pid: int) -> int:
    """How many threads the process ``pid`` has (``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads in /proc/{pid}/status")


async def burst(url: str) -> list[int]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        answers = await asyncio.gather(
            *(client.get(f"/thread/?s={BURST_SECONDS}") for _ in range(BURST))
        )
    return [answer.status_code for answer in answers]


@pytest.mark.server
def test_after_a_burst_the_idle_threads_shrink_back_to_their_bound() -> None:
    idle = 4
    with running("uvicorn", graceful={"IDLE_SYNC_THREADS": idle}) as srv:
        pid = int(srv.get("/pid/").json()["pid"])
        srv.get("/thread/")
        before, peak = threads_of(pid), 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                peak = max(peak, threads_of(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            statuses = asyncio.run(burst(srv.url))
        finally:
            done.set()
            sampler.join(5)
        assert statuses == [200] * BURST
        assert peak >= before + BURST // 2, (before, peak)  # a thread per request in flight
        deadline = time.monotonic() + 5
        while (now := threads_of(pid)) > before + idle:
            assert time.monotonic() < deadline, f"{before} -> {peak} -> {now} threads"
            time.sleep(0.05)


#: Clients at once, and the requests each sends one after the other.
CLIENTS, REQUESTS_EACH = 4, 40


def backends_used(url: str) -> set[int]:
    """The PostgreSQL backends that served ``CLIENTS`` clients' requests (each a sync
    view with one statement), ``CLIENTS`` requests in flight at most."""

    def client() -> list[int]:
        with httpx.Client(base_url=url, timeout=15) as http:
            return [http.get("/sql/pg-backend/").json()["backend"] for _ in range(REQUESTS_EACH)]

    futures = [in_background(client) for _ in range(CLIENTS)]
    return {backend for future in futures for backend in future.result(timeout=60)}


@pytest.mark.server
@pytest.mark.parametrize("health_checks", [False, True], ids=["", "health-checks"])
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn-uvicorn", "daphne"])
def test_persistent_connections_stay_bounded_by_the_requests_in_flight(
    server: str, health_checks: bool
) -> None:
    """Django ticket 33497: under ASGI a thread per request opens a backend per request
    (160 of 160) however long CONN_MAX_AGE is; on reused threads it is kept. A thread
    still closing a response (``request_finished``) when its client's next request comes
    is not free yet: up to twice the requests in flight have a thread, and a backend
    (7 or 8 measured here)."""
    if (reason := postgres_missing()) is not None:
        pytest.skip(reason)
    env = {"GRACEFUL_TEST_PG_CONN_MAX_AGE": "60"}
    if health_checks:
        env["GRACEFUL_TEST_PG_HEALTH_CHECKS"] = "1"
    with running(server, env=env) as srv:
        backends = backends_used(srv.url)
    assert len(backends) <= 2 * CLIENTS + 2, f"{len(backends)} backends for 160 requests"
