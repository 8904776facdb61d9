"""GracefulASGI in-process, message by message (the real servers prove the same on the wire)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from asgiref.testing import ApplicationCommunicator

from django_graceful import signals
from django_graceful._core.cancellation import CancelReason
from django_graceful._core.lifecycle import Lifecycle, StartupFailed
from django_graceful._core.phases import Phase
from django_graceful._core.registry import current_item
from django_graceful._serving.connection import InterruptibleReceive
from django_graceful._serving.protocol import SHUTTING_DOWN_BODY, TRACKED_KEY
from django_graceful.asgi import GracefulASGI
from tests.project import events, views

from .inprocess import NO_SIGNALS, http_scope, open_request, request, start, stop


async def test_lifespan_startup_fills_state_and_shutdown_closes_it(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    lifespan, state = await start(app)
    assert state["pool"].startswith("pool-of-")
    assert len(recorded("startup")) == 1
    status, _, body = await request(app, "/state/")
    assert status == 200 and state["pool"].encode() in body
    await stop(lifespan)
    assert app.lifecycle.phase == Phase.STOPPED
    assert len(recorded("shutdown")) == 1 and len(recorded("lifespan-exit")) == 1


@pytest.mark.parametrize(
    ("manager", "said"),
    [
        pytest.param("broken", "database unreachable (test)", id="raising"),
        pytest.param(
            "not_a_dict", "yielded list; it must yield a dict or None", id="yielding-a-list"
        ),
    ],
)
async def test_a_failing_lifespan_manager_fails_startup_with_its_name_and_message(
    app: GracefulASGI, settings: Any, manager: str, said: str
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "LIFESPAN": [f"tests.project.lifespan.{manager}"]}
    lifespan = ApplicationCommunicator(app, {"type": "lifespan"})
    await lifespan.send_input({"type": "lifespan.startup"})
    message = await lifespan.receive_output(5)
    assert message["type"] == "lifespan.startup.failed"
    assert f"tests.project.lifespan.{manager}" in message["message"]
    assert said in message["message"]


async def test_without_lifespan_startup_runs_once_before_the_first_request(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    results = await asyncio.gather(*(request(app, "/state/") for _ in range(3)))
    assert [status for status, _, _ in results] == [200, 200, 200]
    assert len(recorded("startup")) == 1 and len(recorded("lifespan-enter")) == 1


async def test_without_lifespan_a_failed_startup_answers_503_and_logs_once(
    app: GracefulASGI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    monkeypatch.setenv("GRACEFUL_TEST_FAIL_STARTUP", "1")
    with caplog.at_level(logging.ERROR, "django_graceful"):
        first = await request(app, "/pid/")
        second = await request(app, "/pid/")
    assert first[0] == second[0] == 503
    assert first[2] == second[2] == b"Service Unavailable: startup failed.\n"
    failures = [r for r in caplog.records if "cache warm-up failed (test)" in r.getMessage()]
    assert len(failures) == 1


async def test_draining_serves_and_closes_kept_alive_connections(
    app: GracefulASGI, settings: Any
) -> None:
    """DRAINING serves as usual, but each answer closes its connection: a kept-alive
    client (a balancer's pool) opens a new one for its next request, which the balancer
    sends to a server that is not draining."""
    settings.GRACEFUL = {**NO_SIGNALS, "DRAIN_DELAY": 5, "GRACE_PERIOD": 1}
    lifespan, _ = await start(app)
    status, headers, _ = await request(app, "/pid/")
    assert status == 200 and b"connection" not in headers
    app.lifecycle.begin_shutdown("test")
    await asyncio.sleep(0.05)
    assert app.lifecycle.phase == Phase.DRAINING
    status, headers, _ = await request(app, "/pid/")
    assert status == 200 and headers[b"connection"] == b"close"
    app.lifecycle.escalate()
    await stop(lifespan)


async def test_closing_refuses_new_requests_with_503_and_connection_close(
    app: GracefulASGI,
    settings: Any,
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 5}
    lifespan, _ = await start(app)
    slow = asyncio.ensure_future(request(app, "/slow/?s=0.3"))
    slow_comm_started = asyncio.get_running_loop().time()
    await asyncio.sleep(0.05)
    app.lifecycle.begin_shutdown("test")
    await asyncio.sleep(0.05)
    assert app.lifecycle.phase == Phase.CLOSING
    status, headers, body = await request(app, "/pid/")
    assert status == 503 and headers[b"connection"] == b"close"
    assert body == b"Service is shutting down.\n"
    ws = ApplicationCommunicator(app, {"type": "websocket", "path": "/ws/", "headers": []})
    await ws.send_input({"type": "websocket.connect"})
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": 1012}
    slow_status, slow_headers, _ = await slow
    assert slow_status == 200  # in flight before CLOSING: finished
    assert slow_headers[b"connection"] == b"close"
    assert asyncio.get_running_loop().time() - slow_comm_started < 1
    await stop(lifespan)


async def test_closing_reads_an_uploading_body_before_it_answers_503(
    app: GracefulASGI, settings: Any
) -> None:
    """A server closing the connection with body bytes unread would reset it: the client
    could lose the 503 (or see its upload fail) before it reads it."""
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 5}
    lifespan, _ = await start(app)
    slow = asyncio.ensure_future(request(app, "/slow/?s=0.5"))  # holds CLOSING open
    await asyncio.sleep(0.05)
    app.lifecycle.begin_shutdown("test")
    await asyncio.sleep(0.05)
    headers = [(b"host", b"testserver"), (b"content-length", b"3")]
    upload = ApplicationCommunicator(app, http_scope("/pid/", method="POST", headers=headers))
    await upload.send_input({"type": "http.request", "body": b"a", "more_body": True})
    await upload.send_input({"type": "http.request", "body": b"b", "more_body": True})
    assert await upload.receive_nothing(0.1)  # still reading: no answer yet
    await upload.send_input({"type": "http.request", "body": b"c"})
    answer = await upload.receive_output(5)
    assert answer["status"] == 503 and (b"connection", b"close") in answer["headers"]
    # A client that stops sending gets its 503 after a bounded wait.
    stalled = ApplicationCommunicator(app, http_scope("/pid/", method="POST", headers=headers))
    await stalled.send_input({"type": "http.request", "body": b"a", "more_body": True})
    began = asyncio.get_running_loop().time()
    assert (await stalled.receive_output(5))["status"] == 503
    assert 0.9 <= asyncio.get_running_loop().time() - began < 2
    await slow
    await stop(lifespan)


async def test_shutdown_cancels_the_django_view_after_the_grace(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    """On Django 5.2 the view runs in its own task; the delivered disconnect reaches it."""
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.2, "CANCEL_TIMEOUT": 1}
    lifespan, _ = await start(app)
    comm = ApplicationCommunicator(app, http_scope("/slow/", query_string=b"s=600"))
    await comm.send_input({"type": "http.request", "body": b""})
    await asyncio.sleep(0.1)
    await stop(lifespan, 3)
    assert len(recorded("slow-cancelled")) == 1 and len(recorded("slow-cleanup")) == 1
    assert len(app.lifecycle.registry) == 0
    start_message = await comm.receive_output(1)  # the client still gets an answer
    assert start_message["status"] == 503
    assert (b"connection", b"close") in start_message["headers"]


async def test_work_that_swallows_every_cancel_is_reported_hung_within_the_budget(
    app: GracefulASGI, recorded: Any, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0, "CANCEL_TIMEOUT": 0.4}
    lifespan, _ = await start(app)
    comm = ApplicationCommunicator(app, http_scope("/stubborn/"))
    await comm.send_input({"type": "http.request", "body": b""})
    await asyncio.sleep(0.1)
    began = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING, "django_graceful"):
        await stop(lifespan, 3)
    assert asyncio.get_running_loop().time() - began < 1.0
    assert len(recorded("stubborn-swallowed")) >= 2  # cancelled, then cancelled again
    hung = [r.getMessage() for r in caplog.records if "hung at shutdown" in r.getMessage()]
    assert len(hung) == 1 and "GET /stubborn/" in hung[0]
    assert "in stubborn" in hung[0]  # the stack reaches the view, on Django 5.2 too
    views.RELEASE_STUBBORN.set()
    await comm.wait(2)
    views.RELEASE_STUBBORN.clear()


async def test_many_requests_hung_in_one_place_make_one_warning(
    app: GracefulASGI, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.2, "CANCEL_TIMEOUT": 0.3}
    lifespan, _ = await start(app)
    comms = []
    for n in range(5):  # five paths, one view, one line
        comm = ApplicationCommunicator(app, http_scope("/stubborn/", query_string=b"n=%d" % n))
        await comm.send_input({"type": "http.request", "body": b""})
        comms.append(comm)
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, "django_graceful"):
        await stop(lifespan, 3)
    hung = [r.getMessage() for r in caplog.records if "hung at shutdown" in r.getMessage()]
    assert len(hung) == 1, hung
    assert "GET /stubborn/" in hung[0] and "(and 4 more like it)" in hung[0]
    assert "in stubborn" in hung[0]
    views.RELEASE_STUBBORN.set()
    for comm in comms:
        await comm.wait(2)
    views.RELEASE_STUBBORN.clear()


@asynccontextmanager
async def exits_on_close(app: Any) -> AsyncIterator[None]:
    """A LIFESPAN manager whose exit ends the process (were it not contained)."""
    yield
    raise SystemExit(3)


async def exits_when_draining(sender: object, **kwargs: object) -> None:
    raise SystemExit(3)


async def interrupts_on_shutdown(sender: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


async def test_async_shutdown_hooks_raising_systemexit_are_named_and_the_shutdown_completes(
    app: GracefulASGI, recorded: Any, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = {
        **NO_SIGNALS,
        "LIFESPAN": [*NO_SIGNALS["LIFESPAN"], "tests.test_asgi.exits_on_close"],
    }
    lifespan, _ = await start(app)
    signals.shutdown_started.connect(exits_when_draining)
    signals.shutdown.connect(interrupts_on_shutdown)
    try:
        with caplog.at_level(logging.ERROR, "django_graceful"):
            await stop(lifespan)
    finally:
        signals.shutdown_started.disconnect(exits_when_draining)
        signals.shutdown.disconnect(interrupts_on_shutdown)
    assert app.lifecycle.phase == Phase.STOPPED
    # the hooks after them ran, and the LIFESPAN manager entered before exited
    assert len(recorded("shutdown")) == 1 and len(recorded("lifespan-exit")) == 1
    assert "hook tests.test_asgi.exits_when_draining raised SystemExit" in caplog.text
    assert "hook tests.test_asgi.interrupts_on_shutdown raised KeyboardInterrupt" in caplog.text
    assert "LIFESPAN tests.test_asgi.exits_on_close (on exit) raised SystemExit" in caplog.text


async def test_unexpected_lifespan_message_is_logged_not_fatal(
    app: GracefulASGI, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    lifespan, _ = await start(app)
    with caplog.at_level(logging.ERROR, "django_graceful"):
        await lifespan.send_input({"type": "lifespan.bogus"})
        await stop(lifespan)
    assert "unexpected lifespan message 'lifespan.bogus'" in caplog.text


async def test_two_arguments_without_an_rsgi_scope_fail_with_a_clear_message(
    app: GracefulASGI,
) -> None:
    with pytest.raises(TypeError, match="not an RSGI scope"):
        await app({"type": "http"}, object())  # type: ignore[arg-type]


async def slow_startup(sender: object, **kwargs: object) -> None:
    await asyncio.sleep(0.3)


async def test_a_lifespan_shutdown_during_the_lazy_startup_leaves_the_app_stopped(
    app: GracefulASGI,
    settings: Any,
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    signals.startup.connect(slow_startup)
    try:
        first = asyncio.ensure_future(request(app, "/pid/"))  # starts the lazy startup
        await asyncio.sleep(0.1)
        lifespan = ApplicationCommunicator(app, {"type": "lifespan", "state": {}})
        await stop(lifespan)
        assert app.lifecycle.phase == Phase.STOPPED
        await asyncio.wait_for(first, 5)
        after = await request(app, "/pid/")
    finally:
        signals.startup.disconnect(slow_startup)
    assert app.lifecycle.phase == Phase.STOPPED
    assert after[0] == 503 and after[2] == SHUTTING_DOWN_BODY


async def test_a_request_the_server_cancels_while_it_waits_for_the_startup_gets_503(
    app: GracefulASGI, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    signals.startup.connect(slow_startup)
    try:
        comm = await open_request(app, "/pid/")  # runs the lazy startup (Daphne: no lifespan)
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, "django_graceful"):
            comm.future.cancel()  # what Daphne does to every connection on SIGTERM
            with pytest.raises(asyncio.CancelledError):  # and the cancel goes on
                await asyncio.wait_for(comm.future, 5)
        start_message = comm.output_queue.get_nowait()
        body = comm.output_queue.get_nowait()
    finally:
        signals.startup.disconnect(slow_startup)
    assert start_message["status"] == 503 and body["body"] == SHUTTING_DOWN_BODY
    assert "GET /pid/: the server stopped it while it waited for the startup" in caplog.text


async def test_a_lifespan_startup_after_the_shutdown_begins_the_next_cycle(
    app: GracefulASGI,
    settings: Any,
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    lifespan, _ = await start(app)
    await stop(lifespan)
    assert (await request(app, "/pid/"))[0] == 503  # the same loop, no new lifespan: stopped
    again, state = await start(app)
    assert app.lifecycle.phase == Phase.SERVING and "pool" in state
    assert (await request(app, "/state/"))[0] == 200
    await stop(again)


async def test_a_lifespan_startup_while_the_shutdown_is_under_way_fails_clearly(
    app: GracefulASGI,
    settings: Any,
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    lifespan, _ = await start(app)
    slow = await open_request(app, "/slow/?s=0.5")
    await asyncio.sleep(0.1)
    await lifespan.send_input({"type": "lifespan.shutdown"})
    await asyncio.sleep(0.1)
    assert app.lifecycle.phase == Phase.CLOSING
    again = ApplicationCommunicator(app, {"type": "lifespan", "state": {}})
    await again.send_input({"type": "lifespan.startup"})
    message = await again.receive_output(5)
    assert message["type"] == "lifespan.startup.failed"
    assert "while the shutdown is under way (phase CLOSING)" in message["message"]
    with pytest.raises(StartupFailed):  # raised after the message, as Starlette does
        await asyncio.wait_for(again.future, 5)
    assert (await slow.receive_output(5))["status"] == 200
    assert await lifespan.receive_output(5) == {"type": "lifespan.shutdown.complete"}


async def test_a_scope_without_a_type_is_a_clear_error(app: GracefulASGI) -> None:
    with pytest.raises(ValueError, match="a scope without a 'type'"):
        await asyncio.wait_for(app({"path": "/"}, receive_nothing, send_nothing), 5)  # type: ignore[typeddict-item]
    assert app.lifecycle.phase == Phase.NEW


async def test_an_unknown_scope_type_fails_at_once_and_starts_nothing(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    with pytest.raises(ValueError, match="does not serve scope type 'bogus'"):
        await asyncio.wait_for(app({"type": "bogus"}, receive_nothing, send_nothing), 5)  # type: ignore[typeddict-item]
    assert app.lifecycle.phase == Phase.NEW and recorded("startup") == []


async def test_an_explicit_none_send_is_its_own_clear_error(app: GracefulASGI) -> None:
    with pytest.raises(TypeError, match="send=None") as caught:
        await asyncio.wait_for(app(http_scope("/pid/"), receive_nothing, None), 5)  # type: ignore[arg-type]
    assert "RSGI" not in str(caught.value)
    assert app.lifecycle.phase == Phase.NEW


async def receive_nothing() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


async def send_nothing(message: Any) -> None:
    pass


def test_wrapping_something_not_callable_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="wraps an ASGI application"):
        GracefulASGI("tests.project.asgi:application")


async def test_interrupted_receive_returns_the_disconnect_and_leaves_no_cancel_behind() -> None:
    never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def server_receive() -> dict[str, Any]:
        return await never

    receive = InterruptibleReceive(server_receive, {"type": "http.disconnect"})
    waiter = asyncio.ensure_future(receive())
    await asyncio.sleep(0)
    receive.interrupt(CancelReason.SHUTDOWN)
    assert await waiter == {"type": "http.disconnect"}
    assert waiter.cancelling() == 0
    assert await receive() == {"type": "http.disconnect"}  # and from then on


async def test_a_receive_cancelled_by_its_task_leaves_no_cycle_behind() -> None:
    """Django cancels its disconnect watch (a task blocked in ``receive()``) at the end of
    every request: the task must go when it ends, not wait for the garbage collector."""
    never = asyncio.Event()

    async def server_receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    receive = InterruptibleReceive(server_receive, {"type": "http.disconnect"})
    gc.disable()
    try:
        watch = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        watch.cancel()
        await asyncio.wait({watch})
        assert watch.cancelled()
        gone = weakref.ref(watch)
        del watch
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("path", ["/current/", "/current-sync/"])
@pytest.mark.parametrize("outer_context", [False, True], ids=["own-context", "outer-context"])
async def test_the_request_is_the_current_work_in_its_view_threads_and_tasks(
    app: GracefulASGI, path: str, outer_context: bool
) -> None:
    """``current_item()`` / ``current_cancellation()`` are the request's in its view, the
    threads of its sync code and the tasks it starts: carried by Django's
    ThreadSensitiveContext, or (one entered before GracefulASGI) by a context variable."""

    async def in_outer_context(scope: Any, receive: Any, send: Any) -> None:
        async with ThreadSensitiveContext():
            await app(scope, receive, send)

    status, _, body = await request(in_outer_context if outer_context else app, path)  # type: ignore[arg-type]
    assert status == 200
    assert all(json.loads(body).values()), body


async def test_the_request_is_the_current_work_of_an_app_other_than_django_s(
    lifecycle: Lifecycle,
) -> None:
    seen: list[bool] = []

    async def other_app(scope: Any, receive: Any, send: Any) -> None:
        item = scope[TRACKED_KEY]
        seen.append(current_item() is item)
        seen.append(await sync_to_async(current_item)() is item)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    status, _, _ = await request(GracefulASGI(other_app, lifecycle=lifecycle), "/")
    assert status == 200
    assert seen == [True, True]
    assert current_item() is None


def test_events_module_is_silent_without_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRACEFUL_TEST_EVENTS", raising=False)
    events.record("nothing")  # writes nowhere, raises nothing
