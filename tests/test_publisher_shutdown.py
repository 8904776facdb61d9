"""The worker's writes at shutdown: never in the loop thread, bounded by the budget, and
a last report that cannot be written loses nothing (the live snapshot stays)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._diagnosis.publisher import Publisher
from django_graceful._diagnosis.snapshot import host_id
from django_graceful._diagnosis.stores import FileStore
from django_graceful.asgi import GracefulASGI

from .inprocess import start, stop

#: A budget of about 2 s: GRACE_PERIOD + CANCEL_TIMEOUT + the test project's hooks.
QUICK = {
    "HANDLE_SIGNALS": False,
    "LIFESPAN": [],
    "GRACE_PERIOD": 0.5,
    "CANCEL_TIMEOUT": 0.5,
    "HOOK_TIMEOUT": 0.05,
}


class SilentCache:
    """A cache that accepts the connection and never answers (until the test ends)."""

    description = "cache 'state'"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[str] = []

    def prepare(self) -> None:
        pass

    def tidy(self, alive: Any) -> None:
        pass

    def write(self, text: str, *, last: bool = False) -> None:
        self.threads.append(threading.current_thread().name)
        self.release.wait(10)

    def remove_live(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.release.wait(10)


async def shut_down(app: GracefulASGI, lifecycle: Lifecycle, pub: Publisher) -> float:
    """Start, let the heartbeat write, shut down; seconds until the shutdown completed."""
    lifecycle.on_phase(pub.on_phase)
    lifespan, _ = await start(app)
    await asyncio.sleep(0.2)  # the heartbeat's first write is under way
    began = time.monotonic()
    await stop(lifespan, 10)
    return time.monotonic() - began


async def test_a_cache_that_never_answers_does_not_hold_the_shutdown_past_its_budget(
    app: GracefulASGI, lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    """Nothing in flight: the shutdown ends within its budget (the watchdog would end the
    process at budget + 1 s), the loop thread never touched the store, one warning."""
    settings.GRACEFUL = {**QUICK, "HEARTBEAT": 0.1}
    cache = SilentCache()
    pub = Publisher(lifecycle, cache)
    try:
        with caplog.at_level(logging.WARNING, logger="django_graceful"):
            took = await shut_down(app, lifecycle, pub)
    finally:
        cache.release.set()
    assert took < lifecycle.budget() + 0.3
    assert "MainThread" not in cache.threads and threading.main_thread().name == "MainThread"
    warnings = [r.getMessage() for r in caplog.records if "cache 'state'" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert (
        "the last report is not written; no snapshot of this worker was ever written" in warnings[0]
    )


class FullDisk(FileStore):
    """A folder whose disk filled up after the worker's last heartbeat."""

    full = False

    def write(self, text: str, *, last: bool = False) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        super().write(text, last=last)


#: When the disk fills -> what the worker says is left of it, its last report lost.
LEFT_BEHIND = {
    # after heartbeats were written: the newest stays, and checkshutdown reads it
    "CLOSING": "its live snapshot written {} s ago stays as its last word (checkshutdown "
    "reports the worker as died)",
    # before the first one: nothing of the worker is left
    "STARTING": "no snapshot of this worker was ever written: checkshutdown cannot know it "
    "ran nor what it held",
}


@pytest.mark.parametrize("fills_at", list(LEFT_BEHIND))
async def test_a_full_disk_keeps_the_live_snapshot_and_says_the_report_is_lost(
    app: GracefulASGI,
    lifecycle: Lifecycle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
    fills_at: str,
) -> None:
    settings.GRACEFUL = {**QUICK, "HEARTBEAT": 0.1}
    store = FullDisk(str(tmp_path / "state"), host_id(), os.getpid())
    pub = Publisher(lifecycle, store)
    live = tmp_path / "state" / f"live-{host_id()}-{os.getpid()}.json"

    def fill_the_disk(phase: Any) -> None:
        if phase.name == fills_at:
            store.full = True

    lifecycle.on_phase(fill_the_disk)
    with caplog.at_level(logging.INFO, logger="django_graceful"):
        await shut_down(app, lifecycle, pub)

    assert live.exists() == (fills_at == "CLOSING")  # the worker's last word, if any
    assert not (tmp_path / "state" / f"last-{host_id()}-{os.getpid()}.json").exists()
    messages = [r.getMessage() for r in caplog.records]
    said = re.escape(
        "the last shutdown report is not written (OSError: [Errno 28] No space left on "
        f"device); {LEFT_BEHIND[fills_at]}"
    ).replace(re.escape("{}"), r"\d+\.\d")
    assert any(re.search(said, m) for m in messages), messages
    assert not any("written again" in m for m in messages), messages
