"""GracefulMiddleware names a request's work: what the logs, snapshots and reports show of it.

Through GracefulASGI and Django, a request hangs in a view of ``urls_redact`` (its path
carries an id and a token): its "hang detected" warning, the live snapshot, the
"hung at shutdown" warning and the last shutdown report all name it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._diagnosis.publisher import Publisher
from django_graceful._diagnosis.snapshot import host_id
from django_graceful._diagnosis.stores import FileStore
from django_graceful.asgi import GracefulASGI

from .inprocess import (
    NO_SIGNALS,
    Events,
    open_request,
    release_the_swallower,
    start,
    stop,
    wait_for,
)

HANGING = {
    **NO_SIGNALS,
    "GRACE_PERIOD": 0,
    "CANCEL_TIMEOUT": 0.3,
    "HEARTBEAT": 0.05,
    "HANG_THRESHOLD": 0.05,
}
ROUTE = "/orders/<int:id>/<str:token>/"


@dataclass
class Seen:
    """What a request that hung left behind: the texts a person or a machine reads."""

    live: str  # the live snapshot, while it hangs
    last: str  # the last shutdown report
    logs: list[str]  # every line django_graceful logged
    hang_detected: str
    hung_at_shutdown: str


Hang = Callable[..., Awaitable[Seen]]


@pytest.fixture
def hang(
    app: GracefulASGI,
    lifecycle: Lifecycle,
    tmp_path: Path,
    recorded: Events,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> Hang:
    """``await hang(path, **graceful)``: under ``urls_redact`` and HANGING settings (and
    ``graceful``), a GET of ``path`` hangs until the shutdown; what it left behind."""

    async def run(path: str, **graceful: Any) -> Seen:
        settings.ROOT_URLCONF = "tests.project.urls_redact"
        settings.GRACEFUL = {**HANGING, **graceful}
        folder = tmp_path / "state"
        pub = Publisher(lifecycle, FileStore(str(folder), host_id(), os.getpid()))
        lifecycle.on_phase(pub.on_phase)
        with caplog.at_level(logging.DEBUG, "django_graceful"):
            lifespan, _ = await start(app)
            comm = await open_request(app, path)
            await wait_for(recorded, "swallower-begin")
            deadline = time.monotonic() + 3
            while "hang detected" not in caplog.text:
                assert time.monotonic() < deadline, "no hang detected within 3 s"
                await asyncio.sleep(0.02)
            (live,) = folder.glob("live-*.json")
            live_text = live.read_text()
            await stop(lifespan)
            await release_the_swallower(comm)
        (last,) = folder.glob("last-*.json")
        logs = [r.getMessage() for r in caplog.records if r.name.startswith("django_graceful")]
        return Seen(
            live=live_text,
            last=last.read_text(),
            logs=logs,
            hang_detected=next(m for m in logs if m.startswith("hang detected")),
            hung_at_shutdown=next(m for m in logs if m.startswith("hung at shutdown")),
        )

    return run


async def test_a_path_with_an_escape_sequence_is_logged_with_it_visible(hang: Hang) -> None:
    """``/orders/7/x%1b%5b31mRED%e2%80%ae/``: its ESC would recolour the terminal that
    tails the log, its U+202E turn the rest of the line around."""
    seen = await hang("/orders/7/x\x1b[31mRED\u202e/")
    shown = "GET /orders/7/x\\x1b[31mRED\\u202e/"
    assert f"tests.project.urls_redact.order ({shown})" in seen.hang_detected
    assert seen.hung_at_shutdown.startswith(f"hung at shutdown: request {shown}, view ")
    for line in seen.logs:
        assert "\x1b" not in line and "\u202e" not in line, line


async def test_with_redacted_paths_only_the_route_reaches_snapshots_reports_and_logs(
    hang: Hang,
) -> None:
    seen = await hang("/orders/7461/hunter2/", REDACT_PATHS=True)
    assert f"tests.project.urls_redact.order (GET {ROUTE})" in seen.hang_detected
    assert seen.hung_at_shutdown.startswith(f"hung at shutdown: request GET {ROUTE}, view ")
    assert f'"GET {ROUTE}"' in seen.live and f'"GET {ROUTE}"' in seen.last
    for text in [seen.live, seen.last, *seen.logs]:
        assert "hunter2" not in text and "7461" not in text, text


async def test_with_redacted_paths_a_cancelled_view_is_logged_by_its_route(
    app: GracefulASGI, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.ROOT_URLCONF = "tests.project.urls_redact"
    settings.GRACEFUL = {**NO_SIGNALS, "REDACT_PATHS": True}
    with caplog.at_level(logging.DEBUG, "django_graceful"):
        comm = await open_request(app, "/orders/7461/hunter2/timed/")
        assert (await comm.receive_output(3))["status"] == 504
        await comm.wait(3)
    logs = [r.getMessage() for r in caplog.records if r.name.startswith("django_graceful")]
    route = "GET /orders/<int:id>/<str:token>/timed/"
    said = f"view tests.project.urls_redact.timed_order ({route}) cancelled: timeout after"
    assert any(line.startswith(said) for line in logs), logs
    assert not [line for line in logs if "hunter2" in line or "7461" in line]
