"""Chaining SIGTERM/SIGINT in front of the server's own handler, both ways servers install one."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator

import pytest

from django_graceful._core.signal_chain import SIGNALS, ChainedSignals, ignore_from_now


@pytest.fixture(autouse=True)
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


async def wait_for(condition, timeout: float = 2) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_we_see_the_signal_first_and_hand_it_on_later() -> None:
    server_saw: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: server_saw.append(signum))
    we_saw: list[int] = []
    chained = ChainedSignals(asyncio.get_running_loop(), we_saw.append)
    assert chained.install()
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_for(lambda: we_saw)
    assert we_saw == [signal.SIGTERM] and server_saw == []  # the server does not know yet
    chained.forward(signal.SIGTERM)
    assert server_saw == [signal.SIGTERM]


async def test_a_loop_signal_handler_is_chained_too() -> None:
    loop = asyncio.get_running_loop()
    server_saw: list[str] = []
    loop.add_signal_handler(signal.SIGTERM, server_saw.append, "stop")
    try:
        we_saw: list[int] = []
        chained = ChainedSignals(loop, we_saw.append)
        assert chained.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_for(lambda: we_saw)
        assert server_saw == []
        chained.forward(signal.SIGTERM)
        assert server_saw == ["stop"]
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def test_an_ignored_signal_stays_ignored() -> None:
    """SIGINT in a background job, or a server that leaves a signal to its parent: no
    drain that would end with every request refused and nobody to stop the process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    we_saw: list[int] = []
    chained = ChainedSignals(asyncio.get_running_loop(), we_saw.append)
    assert chained.install()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.1)
    assert we_saw == []


async def test_a_driver_may_take_an_ignored_signal_and_hand_on_nothing() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    we_saw: list[int] = []
    chained = ChainedSignals(asyncio.get_running_loop(), we_saw.append, chain_ignored=True)
    assert chained.install()
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_for(lambda: we_saw)
    chained.forward(signal.SIGTERM)  # nothing happens, and the test process lives on
    assert we_saw == [signal.SIGTERM]


async def test_outside_the_main_thread_nothing_is_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGTERM)
    installed = await asyncio.to_thread(ChainedSignals(loop, lambda s: None).install)
    assert installed is False
    assert signal.getsignal(signal.SIGTERM) is before
    assert "not in the main thread" in caplog.text


async def test_restore_puts_back_the_handlers_it_replaced_both_ways() -> None:
    loop = asyncio.get_running_loop()
    server = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGTERM, server)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    try:
        before = loop._signal_handlers[signal.SIGINT]  # type: ignore[attr-defined]
        chained = ChainedSignals(loop, lambda s: None)
        assert chained.install()
        assert signal.getsignal(signal.SIGTERM) != server
        chained.restore()
        assert signal.getsignal(signal.SIGTERM) is server
        assert loop._signal_handlers[signal.SIGINT]._callback is before._callback  # type: ignore[attr-defined]
        chained.restore()  # once: nothing more to do
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def test_restore_leaves_a_handler_installed_after_ours() -> None:
    chained = ChainedSignals(asyncio.get_running_loop(), lambda s: None)
    assert chained.install()
    later = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGTERM, later)
    chained.restore()
    assert signal.getsignal(signal.SIGTERM) is later


def test_ignore_from_now_leaves_the_closing_loop_no_handler_and_ignores_the_stop_signals() -> None:
    """A SIGTERM while the loop closes neither ends the process nor meets a closed wakeup fd."""
    loop = asyncio.new_event_loop()
    seen: list[int] = []
    try:
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            loop.add_signal_handler(signum, seen.append, signum)
        ignore_from_now(loop, frozenset({signal.SIGTERM}))
        assert signal.set_wakeup_fd(-1) == -1  # no fd of the loop's is written to any more
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # as the loop would leave it
        os.kill(os.getpid(), signal.SIGTERM)
        loop.close()
        assert seen == []
    finally:
        loop.close()


def test_a_chain_whose_loop_closed_steps_aside_and_the_signal_does_what_it_did_before() -> None:
    """No 'Event loop is closed' from a signal handler after a test's loop is gone."""
    server_saw: list[int] = []
    server = lambda signum, frame: server_saw.append(signum)  # noqa: E731
    signal.signal(signal.SIGTERM, server)
    loop = asyncio.new_event_loop()
    we_saw: list[int] = []
    assert ChainedSignals(loop, we_saw.append).install()
    loop.close()
    os.kill(os.getpid(), signal.SIGTERM)
    assert server_saw == [signal.SIGTERM] and we_saw == []
    assert signal.getsignal(signal.SIGTERM) is server


async def test_off_the_main_thread_the_note_takes_the_level_it_is_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    chained = ChainedSignals(loop, lambda s: None, off_main_thread=logging.INFO)
    with caplog.at_level(logging.DEBUG, "django_graceful"):
        assert await asyncio.to_thread(chained.install) is False
    assert [r.levelname for r in caplog.records] == ["INFO"]
