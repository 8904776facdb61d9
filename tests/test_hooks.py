"""Startup/shutdown hooks: sync and async, in order, each bounded, failures named."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from django.dispatch import Signal

from django_graceful import on_shutdown
from django_graceful._core.hooks import budget, running_hooks, send_bounded


@pytest.fixture
def signal() -> Iterator[Signal]:
    yield Signal()


async def test_sync_and_async_receivers_run_in_connection_order(signal: Signal) -> None:
    calls: list[str] = []

    def first(sender: object, **kwargs: object) -> None:
        calls.append("sync-1")

    async def second(sender: object, **kwargs: object) -> None:
        calls.append("async-2")

    def third(sender: object, **kwargs: object) -> None:
        calls.append("sync-3")

    for receiver in (first, second, third):
        signal.connect(receiver)
    results = await send_bounded(signal, object, 1)
    assert calls == ["sync-1", "async-2", "sync-3"]
    assert all(r.outcome.ok for r in results)


async def test_an_async_hook_that_swallows_cancel_is_abandoned_after_its_timeout(
    signal: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()
    cancels = 0

    async def stubborn(sender: object, **kwargs: object) -> None:
        nonlocal cancels
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancels += 1

    signal.connect(stubborn)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, "django_graceful"):
        [result] = await send_bounded(signal, object, 0.2)
    release.set()
    assert not result.outcome.finished and cancels == 1
    assert time.monotonic() - began < 0.6
    assert "test_hooks" in caplog.text and "did not finish within 0.2 s" in caplog.text


async def test_a_sync_hook_that_blocks_does_not_block_the_loop_or_the_caller(
    signal: Signal,
) -> None:
    release = threading.Event()

    def blocking(sender: object, **kwargs: object) -> None:
        release.wait(5)

    signal.connect(blocking)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.ensure_future(ticker())
    [result] = await send_bounded(signal, object, 0.2)
    ticking.cancel()
    release.set()
    assert not result.outcome.finished
    assert ticks >= 10  # the loop kept answering while the hook blocked


async def test_async_to_sync_in_a_sync_hook_runs_on_the_loop_that_runs_the_hooks(
    signal: Signal,
) -> None:
    """As in a sync view: what the hook sends (a consumer's ``self.send()``) belongs to
    this loop, and a lock this loop holds is waited for, not taken to another loop."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    ran_on = []

    async def send() -> None:
        async with lock:
            ran_on.append(asyncio.get_running_loop())

    def goodbye(sender: object, **kwargs: object) -> None:
        async_to_sync(send)()

    signal.connect(goodbye)
    await lock.acquire()  # a send still in flight on this loop
    loop.call_later(0.1, lock.release)
    [result] = await send_bounded(signal, object, 2)
    assert result.outcome.ok, result.outcome
    assert ran_on == [loop]


async def test_what_a_sync_hook_awaits_through_async_to_sync_is_cancelled_at_its_deadline(
    signal: Signal,
) -> None:
    cancelled = asyncio.Event()
    thread_ended = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def waits(sender: object, **kwargs: object) -> None:
        try:
            async_to_sync(forever)()
        finally:
            thread_ended.set()

    signal.connect(waits)
    [result] = await send_bounded(signal, object, 0.2)
    assert not result.outcome.finished
    await asyncio.wait_for(cancelled.wait(), 1)
    assert await asyncio.to_thread(thread_ended.wait, 1)  # the hook's thread is free again


async def test_a_raising_hook_is_logged_with_its_name_and_the_next_one_runs(
    signal: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    ran = []

    def broken(sender: object, **kwargs: object) -> None:
        raise ValueError("flush failed")

    def after(sender: object, **kwargs: object) -> None:
        ran.append(True)

    signal.connect(broken)
    signal.connect(after)
    with caplog.at_level(logging.ERROR, "django_graceful"):
        results = await send_bounded(signal, object, 1)
    assert ran == [True]
    assert isinstance(results[0].outcome.error, ValueError)
    assert "hook tests.test_hooks" in caplog.text and "ValueError: flush failed" in caplog.text


@pytest.mark.parametrize("escape", [SystemExit(3), KeyboardInterrupt()], ids=repr)
async def test_an_async_hook_raising_systemexit_is_named_and_the_next_one_runs_like_a_sync_one(
    signal: Signal, caplog: pytest.LogCaptureFixture, escape: BaseException
) -> None:
    ran = []

    async def exits(sender: object, **kwargs: object) -> None:
        raise escape

    def exits_too(sender: object, **kwargs: object) -> None:
        raise escape

    def after(sender: object, **kwargs: object) -> None:
        ran.append(True)

    for receiver in (exits, exits_too, after):
        signal.connect(receiver)
    with caplog.at_level(logging.ERROR, "django_graceful"):
        results = await asyncio.wait_for(send_bounded(signal, object, 1), 5)
    assert ran == [True]
    assert [r.outcome.error for r in results] == [escape, escape, None]
    name = type(escape).__name__
    assert f"hook tests.test_hooks.{exits.__qualname__} raised {name}" in caplog.text
    assert f"hook tests.test_hooks.{exits_too.__qualname__} raised {name}" in caplog.text


async def test_on_shutdown_with_a_timeout_bounds_that_hook(signal: Signal) -> None:
    from django_graceful import signals

    calls = []

    @on_shutdown(timeout=0.1)
    async def slow_flush() -> None:
        calls.append("began")
        await asyncio.sleep(5)

    try:
        assert budget(signals.shutdown, object, 5) >= 0.1
        results = await send_bounded(signals.shutdown, object, 5)
        mine = [r for r in results if r.name.endswith("slow_flush")]
        assert mine and not mine[0].outcome.finished and mine[0].timeout == 0.1
        assert calls == ["began"]
    finally:
        uid = f"graceful:on_shutdown:{__name__}.{slow_flush.__qualname__}"
        assert signals.shutdown.disconnect(dispatch_uid=uid)


def test_bad_hook_timeouts_are_rejected() -> None:
    with pytest.raises(ValueError, match="seconds >= 0"):
        on_shutdown(timeout=-1)
    with pytest.raises(TypeError, match="decorates a function"):
        on_shutdown(timeout=1)(42)  # type: ignore[arg-type]


async def test_the_hook_running_now_is_listed_and_said_to_block_the_loop_past_its_bound(
    signal: Signal,
) -> None:
    """What the watchdog's line names: a hook that never gives the loop back is still
    running past its bound (one that does is abandoned at it)."""
    seen: list[str] = []

    def blocking(sender: object, **kwargs: object) -> None:
        [hook] = running_hooks()
        seen.append(hook.describe(hook.since + 0.1))
        seen.append(hook.describe(hook.since + 5))

    signal.connect(blocking)
    await send_bounded(signal, object, 0.2)
    name = f"tests.test_hooks.{blocking.__qualname__}"
    assert seen == [
        f"hook {name} has run for 0.1 s (its bound: 0.2 s)",
        f"hook {name} has blocked the event loop for 5.0 s (its bound: 0.2 s)",
    ]
    assert running_hooks() == []
