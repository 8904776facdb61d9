"""REUSE_SYNC_THREADS: a request's sync code runs on a thread reused from request to
request, never on one another request is still using."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from django_graceful._serving import threads as request_threads
from django_graceful._serving.threads import (
    MAX_IDLE,
    RequestThread,
    SyncThreads,
    request_ended,
)
from django_graceful.asgi import GracefulASGI

from .inprocess import NO_SIGNALS, Events, request, wait_for
from .servers import in_background, running

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
    # Back in the pool before the loop hears that the request's last call ended.
    assert len(set(names)) == 1, names
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


def test_the_pool_keeps_max_idle_threads_and_the_surplus_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread beyond the bound is kept ``SURPLUS_IDLE`` (taken again meanwhile under a
    steady load), then ends, the oldest first."""
    monkeypatch.setattr(request_threads, "SURPLUS_IDLE", 0.3)
    threads = SyncThreads(max_idle=2)
    taken = [threads.take() for _ in range(3)]
    assert len({id(t) for t in taken}) == 3
    for thread in taken:
        threads.give_back(thread)
    assert len(threads) == 3
    assert threads.take() is taken[-1]  # the one most recently back
    threads.give_back(taken[-1])
    deadline = time.monotonic() + 5
    while len(threads) > 2:
        assert time.monotonic() < deadline, len(threads)
        time.sleep(0.02)
    assert [threads.take(), threads.take()] == [taken[2], taken[1]]  # the oldest ended
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


def test_a_thread_goes_back_from_itself_once_its_sent_response_was_closed_there() -> None:
    # Before the request's task has heard of the close: its client's next request, which
    # may come that soon, finds the thread idle.
    threads = SyncThreads()
    thread, owner, response = threads.take(), object(), SimpleNamespace(sent=False)
    back = threading.Event()

    def closed(closed_thread: RequestThread) -> None:
        threads.put_back(closed_thread)
        back.set()

    thread.lend(owner, response, closed)
    try:
        # request_finished before the response was sent (a test client's request inside
        # the view): not this request's close, the thread stays lent.
        thread.submit(request_ended).result(2)
        assert not back.wait(0.1) and len(threads) == 0
        response.sent = True
        thread.submit(request_ended).result(2)
        assert back.wait(2)
        assert len(threads) == 1
        threads.give_back(thread, owner)  # the request's end: back once, not twice
        assert len(threads) == 1
    finally:
        thread.shutdown(wait=True)


async def test_a_request_waits_for_a_thread_with_only_a_close_left_never_for_a_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(request_threads, "FINISHING_WAIT", 30)
    threads = SyncThreads()
    running_view = threads.take()
    running_view.lend(object(), SimpleNamespace(sent=False))
    fresh = await threads.take_soon()  # at once: a thread of its own
    assert fresh is not running_view
    finishing, owner = threads.take(), object()
    finishing.lend(owner, SimpleNamespace(sent=True))
    waiting = asyncio.ensure_future(threads.take_soon())
    try:
        await asyncio.sleep(0)
        assert not waiting.done()
        threads.give_back(finishing, owner)
        assert await asyncio.wait_for(waiting, 5) is finishing
    finally:
        for thread in (running_view, fresh, finishing):
            thread.shutdown(wait=False)


async def test_the_wait_for_a_finishing_thread_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A request_finished receiver that takes its time: the next request starts a thread.
    monkeypatch.setattr(request_threads, "FINISHING_WAIT", 0.05)
    threads = SyncThreads()
    finishing = threads.take()
    finishing.lend(object(), SimpleNamespace(sent=True))
    try:
        other = await asyncio.wait_for(threads.take_soon(), 5)
        assert other is not finishing
        other.shutdown(wait=False)
    finally:
        finishing.shutdown(wait=False)


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
        in_flight = in_background(srv.get, "/thread/?s=0.5")
        srv.wait_event("sync-thread-sleeps")
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
