"""@cancellable and shield(): reasons, timeouts, cleanup once and bounded, critical sections."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_graceful import cancellable
from django_graceful.asgi import GracefulASGI
from django_graceful.signals import request_cancelled

from .inprocess import NO_SIGNALS, open_request, start, stop, wait_for


@pytest.fixture
def cancelled_signals() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    request_cancelled.connect(receiver)
    yield seen
    request_cancelled.disconnect(receiver)


async def test_a_client_disconnect_cancels_with_reason_disconnect_and_cleans_up_once(
    app: GracefulASGI,
    recorded: Any,
    cancelled_signals: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    await start(app)
    comm = await open_request(app, "/guarded/")
    await wait_for(recorded, "guarded-begin")
    with caplog.at_level(logging.INFO, "django_graceful"):
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(3)
    assert [c["reason"] for c in recorded("cleanup")] == ["disconnect"]
    assert [str(s["reason"]) for s in cancelled_signals] == ["disconnect"]
    assert "view tests.project.views.guarded (GET /guarded/) cancelled: disconnect" in caplog.text


async def test_a_shutdown_cancels_with_reason_shutdown(
    app: GracefulASGI, recorded: Any, cancelled_signals: list[dict[str, Any]], settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.1}
    lifespan, _ = await start(app)
    comm = await open_request(app, "/guarded/")
    await wait_for(recorded, "guarded-begin")
    await stop(lifespan, 3)
    assert [c["reason"] for c in recorded("cleanup")] == ["shutdown"]
    assert [str(s["reason"]) for s in cancelled_signals] == ["shutdown"]
    assert (await comm.receive_output(1))["status"] == 503


@pytest.mark.parametrize("path", ["/timed/", "/sync-timed/", "/class-timed/"])
async def test_a_timeout_answers_504_with_reason_timeout(
    app: GracefulASGI, path: str, cancelled_signals: list[dict[str, Any]], settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    began = time.monotonic()
    comm = await open_request(app, path)
    response = await comm.receive_output(3)
    assert response["status"] == 504
    assert 0.25 < time.monotonic() - began < 1.5
    assert [str(s["reason"]) for s in cancelled_signals] == ["timeout"]
    await comm.receive_output(1)


@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_an_on_cancel_that_raises_or_hangs_is_logged_and_bounded(
    app: GracefulASGI, mode: str, recorded: Any, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "HOOK_TIMEOUT": 0.3}
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, "django_graceful"):
        comm = await open_request(app, f"/timed/?cleanup={mode}")
        response = await comm.receive_output(3)
    assert response["status"] == 504
    assert time.monotonic() - began < 0.3 + 0.3 + 0.5
    expected = "raised RuntimeError" if mode == "raise" else "did not finish within 0.3 s"
    assert f"on_cancel of tests.project.views.timed {expected}" in caplog.text
    assert len(recorded("cleanup")) == 1


async def test_shield_finishes_its_body_despite_a_disconnect_then_delivers_it(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    comm = await open_request(app, "/shielded/?body=0.3&t=2")
    await wait_for(recorded, "shield-begin")
    await comm.send_input({"type": "http.disconnect"})
    committed = await wait_for(recorded, "committed")
    assert committed["reason"] == "disconnect"  # the token knew at once
    cancelled = await wait_for(recorded, "shield-cancelled")
    assert cancelled["t"] - committed["t"] < 0.2  # delivered as the shield ended
    await comm.wait(2)


async def test_shield_respects_its_timeout(app: GracefulASGI, recorded: Any, settings: Any) -> None:
    settings.GRACEFUL = NO_SIGNALS
    comm = await open_request(app, "/shielded/?body=5&t=0.3")
    begin = await wait_for(recorded, "shield-begin")
    await comm.send_input({"type": "http.disconnect"})
    cancelled = await wait_for(recorded, "shield-cancelled", timeout=3)
    assert 0.25 < cancelled["t"] - begin["t"] < 1.0
    assert recorded("committed") == []
    await comm.wait(2)


async def test_shield_holds_a_shutdown_cancel_too(
    app: GracefulASGI, recorded: Any, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0, "CANCEL_TIMEOUT": 2}
    lifespan, _ = await start(app)
    comm = await open_request(app, "/shielded/?body=0.4&t=2")
    await wait_for(recorded, "shield-begin")
    await stop(lifespan, 3)
    assert recorded("committed")[0]["reason"] == "shutdown"
    assert recorded("shield-cancelled")
    await comm.wait(1)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="seconds > 0"):
        cancellable(timeout=0)
    with pytest.raises(TypeError, match="on_cancel must be callable"):
        cancellable(on_cancel="cleanup")  # type: ignore[arg-type]


async def test_shield_with_a_bad_timeout_is_refused() -> None:
    from django_graceful import shield

    with pytest.raises(ValueError, match="seconds >= 0"):
        async with shield(timeout=-1):
            pass


async def test_a_class_based_view_is_named_by_its_class(
    app: GracefulASGI, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    with caplog.at_level(logging.INFO, "django_graceful"):
        comm = await open_request(app, "/class-timed/")
        assert (await comm.receive_output(3))["status"] == 504
    assert "view tests.project.views.SlowView (GET /class-timed/) cancelled: timeout" in caplog.text
