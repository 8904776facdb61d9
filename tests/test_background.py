"""spawn() and start_thread(): tracked, given the grace, stopped with a reason, never stuck."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from django_graceful import (
    CancelReason,
    ShutdownInProgress,
    current_cancellation,
    spawn,
    start_thread,
)
from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase

from .inprocess import NO_SIGNALS

FAST = {**NO_SIGNALS, "LIFESPAN": [], "GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 0.5}


@pytest.fixture
async def started(lifecycle: Lifecycle, settings: Any) -> Lifecycle:
    """The test's lifecycle, started with FAST settings."""
    settings.GRACEFUL = FAST
    await lifecycle.startup(app=None)
    return lifecycle


@pytest.mark.usefixtures("started")
async def test_a_spawned_task_may_finish_in_the_grace(lifecycle: Lifecycle) -> None:
    done: list[bool] = []

    async def short() -> None:
        await asyncio.sleep(0.2)
        done.append(True)

    task = spawn(short(), name="short")
    assert [i.what for i in lifecycle.registry] == ["short"]
    began = time.monotonic()
    await lifecycle.shutdown("test")
    assert done == [True] and not task.cancelled()
    assert time.monotonic() - began < 0.45  # CLOSING ended when the task did
    assert len(lifecycle.registry) == 0


@pytest.mark.usefixtures("started")
async def test_a_long_task_is_cancelled_with_reason_shutdown_and_awaited(
    lifecycle: Lifecycle,
) -> None:
    seen: list[Any] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append(current_cancellation().reason)
            await asyncio.sleep(0.05)  # unwinding may await
            seen.append("unwound")
            raise

    task = spawn(forever(), name="forever")
    await lifecycle.shutdown("test")
    assert seen == [CancelReason.SHUTDOWN, "unwound"]
    assert task.cancelled()


@pytest.mark.usefixtures("started")
async def test_a_task_that_swallows_the_cancel_is_reported_and_does_not_hold_the_shutdown(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass

    spawn(stubborn(), name="kafka-poller")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, "django_graceful"):
        await lifecycle.shutdown("test")
    assert time.monotonic() - began < 0.5 + 0.5 + 0.3
    assert "hung at shutdown: task kafka-poller (cancelled" in caplog.text
    assert "in stubborn" in caplog.text  # where it waits
    release.set()


@pytest.mark.usefixtures("started")
async def test_a_spawned_task_that_raises_is_logged_by_name(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:

    async def broken() -> None:
        raise ValueError("partition lost")

    with caplog.at_level(logging.ERROR, "django_graceful"):
        task = spawn(broken(), name="consumer")
        await asyncio.wait({task})
        await asyncio.sleep(0)
    assert "spawned task consumer raised ValueError: partition lost" in caplog.text
    assert len(lifecycle.registry) == 0


@pytest.mark.usefixtures("started")
async def test_spawning_during_the_shutdown_is_a_clear_error(lifecycle: Lifecycle) -> None:
    lifecycle.phase = Phase.CLOSING

    async def late() -> None:
        pass

    with pytest.raises(ShutdownInProgress, match="cannot spawn 'late-job': the shutdown began"):
        spawn(late(), name="late-job")
    with pytest.raises(ShutdownInProgress, match="cannot start thread"):
        start_thread(lambda stop: None, name="late-thread")
    with pytest.raises(TypeError, match="takes a coroutine"):
        spawn(late, name="not-called")  # type: ignore[arg-type]


@pytest.mark.usefixtures("started")
async def test_a_flush_thread_stops_at_closing_and_writes_its_last_batch(
    lifecycle: Lifecycle,
) -> None:
    produced: list[int] = []
    flushed: list[int] = []

    def producer(stop: threading.Event) -> None:
        batch: list[int] = []
        n = 0
        while not stop.is_set():
            batch.append(n)
            produced.append(n)
            n += 1
            if len(batch) == 5:
                flushed.extend(batch)
                batch.clear()
            stop.wait(0.01)
        flushed.extend(batch)  # the last, partial batch: nothing lost

    thread = start_thread(producer, name="kafka-flush")
    await asyncio.sleep(0.1)
    began = time.monotonic()
    await lifecycle.shutdown("test")
    assert time.monotonic() - began < 0.3  # stopped at CLOSING, not after the grace
    assert not thread.is_alive()
    assert flushed == produced and produced


@pytest.mark.usefixtures("started")
async def test_a_thread_ignoring_stop_is_reported_with_its_stack_within_the_budget(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def deaf(stop: threading.Event) -> None:
        release.wait(10)

    thread = start_thread(deaf, name="deaf-thread")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, "django_graceful"):
        await lifecycle.shutdown("test")
    assert time.monotonic() - began < 0.5 + 0.5 + 0.3
    assert "hung at shutdown: thread deaf-thread" in caplog.text
    assert "release.wait(10)" in caplog.text  # the thread's own line
    assert thread.daemon  # it cannot hold the interpreter's exit
    release.set()
    thread.join(2)


async def test_a_thread_that_raises_is_logged(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(stop: threading.Event) -> None:
        raise OSError("broker unreachable")

    with caplog.at_level(logging.ERROR, "django_graceful"):
        start_thread(broken, name="producer").join(2)
    assert "thread producer raised" in caplog.text and "broker unreachable" in caplog.text
    assert len(lifecycle.registry) == 0


@pytest.mark.usefixtures("started")
async def test_a_shield_in_a_spawned_task_holds_back_the_task_s_own_cancel(
    lifecycle: Lifecycle,
) -> None:
    from django_graceful import shield

    seen: list[str] = []

    async def flush() -> None:
        (item,) = [i for i in lifecycle.registry if i.what == "flush"]
        async with shield(timeout=5):
            for _ in range(500):  # until the shutdown's cancel came (held), 5 s at most
                if item.cancel_count:
                    seen.append("cancel held")
                    break
                await asyncio.sleep(0.01)
        await asyncio.sleep(3600)  # the held cancel lands at the next await
        seen.append("not cancelled after the shield")

    task = spawn(flush(), name="flush")
    await lifecycle.shutdown("test")
    assert seen == ["cancel held"]  # and delivered once the shield ended
    assert task.cancelled()
