"""The cancellation token: one reason, any thread, callbacks once; and its reasons end to end."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from django_graceful import CancellationToken, CancelReason, RequestCancelled
from django_graceful._core.cancellation import NEVER
from django_graceful._core.registry import current_cancellation
from django_graceful.asgi import GracefulASGI

from .inprocess import NO_SIGNALS, http_scope, request, start, stop, wait_for


def test_the_first_reason_stays_and_callbacks_run_once() -> None:
    token = CancellationToken()
    seen: list[CancelReason] = []
    token.on_cancel(seen.append)
    assert not token.cancelled and token.reason is None
    token.raise_if_cancelled()  # nothing yet
    assert token.cancel(CancelReason.DISCONNECT) is True
    assert token.cancel(CancelReason.SHUTDOWN) is False
    assert token.reason is CancelReason.DISCONNECT and seen == [CancelReason.DISCONNECT]
    with pytest.raises(RequestCancelled) as raised:
        token.raise_if_cancelled()
    assert raised.value.reason is CancelReason.DISCONNECT
    late: list[CancelReason] = []
    token.on_cancel(late.append)  # registered after: runs at once
    assert late == [CancelReason.DISCONNECT]


def test_a_removed_callback_does_not_run() -> None:
    token = CancellationToken()
    seen: list[CancelReason] = []
    remove = token.on_cancel(seen.append)
    remove()
    token.cancel(CancelReason.TIMEOUT)
    assert seen == []


def test_wait_wakes_another_thread_at_once() -> None:
    token = CancellationToken()
    woke: list[float] = []

    def waiter() -> None:
        began = time.monotonic()
        assert token.wait(5)
        woke.append(time.monotonic() - began)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    token.cancel(CancelReason.SHUTDOWN)
    thread.join(2)
    assert woke and woke[0] < 0.5
    assert CancellationToken().wait(0.01) is False


def test_waiters_started_before_and_after_the_cancel_all_return_true() -> None:
    token = CancellationToken()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(token.wait(5))) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    token.cancel(CancelReason.DISCONNECT)
    for thread in threads:
        thread.join(2)
    began = time.monotonic()
    assert token.wait(5) is True and time.monotonic() - began < 0.1  # already set: no wait
    assert results == [True, True, True]


def test_outside_a_request_the_token_is_never_cancelled() -> None:
    assert current_cancellation() is NEVER
    assert NEVER.cancel(CancelReason.SHUTDOWN) is False and not NEVER.cancelled


async def test_a_client_disconnect_stops_a_sync_view_with_reason_disconnect(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    await start(app)
    comm = ApplicationCommunicator(app, http_scope("/export/"))
    await comm.send_input({"type": "http.request", "body": b""})
    begin = await wait_for(recorded, "export-begin")
    assert begin["same_token"] is True
    left = time.monotonic()
    await comm.send_input({"type": "http.disconnect"})
    stopped = await wait_for(recorded, "export-stopped")
    assert stopped["reason"] == "disconnect"
    assert stopped["t"] - (time.time() - (time.monotonic() - left)) < 0.2
    await comm.wait(3)


async def test_a_shutdown_stops_a_sync_view_with_reason_shutdown(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.1, "CANCEL_TIMEOUT": 2}
    lifespan, _ = await start(app)
    comm = ApplicationCommunicator(app, http_scope("/export/"))
    await comm.send_input({"type": "http.request", "body": b""})
    await wait_for(recorded, "export-begin")
    await stop(lifespan, 3)
    assert (await wait_for(recorded, "export-stopped"))["reason"] == "shutdown"
    assert (await comm.receive_output(1))["status"] == 503


@pytest.mark.parametrize(
    ("reason", "status"), [("disconnect", 499), ("shutdown", 503), ("timeout", 504)]
)
async def test_request_cancelled_escaping_a_view_is_an_answer_not_a_server_error(
    app: GracefulASGI, reason: str, status: int, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    with caplog.at_level(logging.ERROR, "django.request"):
        answer, _, body = await request(app, f"/gives-up/?reason={reason}")
    assert answer == status and body == f"Request cancelled: {reason}.\n".encode()
    assert "Internal Server Error" not in caplog.text
