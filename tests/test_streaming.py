"""A streaming response (SSE) stops on disconnect and at shutdown, and its generator closes."""

from __future__ import annotations

from typing import Any

import pytest

from django_graceful.asgi import GracefulASGI

from .inprocess import NO_SIGNALS, Events, open_request, start, stop, wait_for


async def test_sse_stops_and_its_finally_runs_when_the_client_leaves(
    app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    comm = await open_request(app, "/events/")
    assert (await comm.receive_output(2))["status"] == 200
    first = await comm.receive_output(2)
    assert first["body"].startswith(b"data: tick 0")
    await comm.send_input({"type": "http.disconnect"})
    closed = await wait_for(recorded, "sse-closed")
    assert closed["ticks"] >= 1
    await comm.wait(2)


async def test_sse_ends_when_closing_begins_not_after_the_grace(
    app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    """An event stream is endless (``streams.py``, tests/test_streams.py): ended when
    CLOSING begins; a stream opted out streams through the grace, then is cancelled."""
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 20, "CANCEL_TIMEOUT": 1}
    lifespan, _ = await start(app)
    comm = await open_request(app, "/events/")
    assert (await comm.receive_output(2))["status"] == 200
    await stop(lifespan, 3)
    closed = await wait_for(recorded, "sse-closed")
    assert closed["ticks"] >= 1
    assert len(app.lifecycle.registry) == 0


pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
