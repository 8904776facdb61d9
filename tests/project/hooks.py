"""Hooks of the test project: each records that it ran."""

import asyncio
import os
import threading
import time

from django.dispatch import receiver

from django_graceful import (
    ShutdownInProgress,
    is_shutting_down,
    on_shutdown,
    on_startup,
    spawn,
    start_thread,
)
from django_graceful.signals import shutdown_started

from .events import record


@on_startup
async def started() -> None:
    if os.environ.get("GRACEFUL_TEST_FAIL_STARTUP"):
        raise RuntimeError("cache warm-up failed (test)")
    record("startup")


@receiver(shutdown_started)
def draining(sender, trigger, **kwargs) -> None:
    record("shutdown-started", trigger=trigger)


@on_shutdown
def raising_hook() -> None:
    if os.environ.get("GRACEFUL_TEST_RAISE_HOOK"):
        raise RuntimeError("producer flush failed (test)")


@on_shutdown(timeout=1)
async def flushed() -> None:
    record("shutdown")


@on_shutdown(timeout=0.5)
async def hanging_hook() -> None:
    if os.environ.get("GRACEFUL_TEST_HANG_HOOK"):
        record("hanging-hook")
        await asyncio.sleep(3600)


#: ``GRACEFUL_TEST_BLOCK_HOOK``: a shutdown hook that never returns, "sync" (its thread
#: sleeps for ever) or "loop" (an async hook that calls ``time.sleep``: it blocks the
#: event loop). Registered only then, so that other tests keep the project's budget.
BLOCK_HOOK = os.environ.get("GRACEFUL_TEST_BLOCK_HOOK", "")

if BLOCK_HOOK == "sync":

    @on_shutdown(timeout=0.5)
    def frozen_hook() -> None:
        record("blocking-hook")
        time.sleep(3600)

elif BLOCK_HOOK == "loop":

    @on_shutdown(timeout=0.5)
    async def loop_blocking_hook() -> None:
        record("blocking-hook")
        time.sleep(3600)  # noqa: ASYNC251  # blocks the loop


def flusher(stop: threading.Event) -> None:
    """Batches 'messages' and flushes them the way a Kafka producer does."""
    produced = flushed = 0
    batch: list[int] = []
    while not stop.is_set():
        batch.append(produced)
        produced += 1
        if len(batch) >= 20:
            flushed += len(batch)
            batch.clear()
        stop.wait(0.005)
    flushed += len(batch)  # the last batch, on stop: nothing lost
    record("flusher-stopped", produced=produced, flushed=flushed)


def deaf(stop: threading.Event) -> None:
    record("deaf-begin")
    time.sleep(3600)  # ignores stop


async def ticker() -> None:
    ticks = 0
    while not is_shutting_down():
        ticks += 1
        await asyncio.sleep(0.02)
    record("ticker-stopped", ticks=ticks)


async def stubborn_task() -> None:
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            record("task-swallowed")


@on_startup
async def start_background() -> None:
    mode = os.environ.get("GRACEFUL_TEST_BACKGROUND", "")
    if not mode:
        return
    start_thread(flusher, name="flusher")
    spawn(ticker(), name="ticker")
    if "deaf" in mode:
        start_thread(deaf, name="deaf-thread")
    if "stubborn" in mode:
        spawn(stubborn_task(), name="stubborn-task")


@receiver(shutdown_started)
async def spawn_too_late(sender, **kwargs) -> None:
    if not os.environ.get("GRACEFUL_TEST_BACKGROUND"):
        return
    coro = ticker()
    try:
        spawn(coro, name="too-late")
    except ShutdownInProgress as exc:
        record("spawn-refused", message=str(exc))
