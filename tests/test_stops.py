"""What the server's stops mean (``_core/stops.py``), proved with a driver that drives
nothing; each real server's tests prove the same on the wire."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from django_graceful._core.driver import Control, Driver
from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful._core.stops import ServerStops
from django_graceful.conf import GracefulSettings


class RecordingDriver(Driver):
    """A driver that drives nothing: it records what the lifecycle asks of it."""

    def __init__(
        self,
        *,
        quick: frozenset[int] = frozenset(),
        repeats: bool = True,
        parent_keeps: bool = False,
        next_listens: bool = False,
    ) -> None:
        super().__init__()
        self.quick_signals = quick
        self.repeats_escalate = repeats
        self.parent_keeps = parent_keeps
        self.next_listens = next_listens
        self.calls: list[tuple[str, object]] = []

    def parent_keeps_listeners(self) -> bool:
        return self.parent_keeps

    def next_process_listens(self) -> bool:
        return self.next_listens

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        self.control = control  # no signal handlers: the test reports the signals

    def stop_accepting(self) -> None:
        self.calls.append(("stop_accepting", None))

    def release(self, signum: int | None, *, quick: bool, hung: list[Any]) -> None:
        self.calls.append(("release", (signum, quick)))

    def hurry(self) -> None:
        self.calls.append(("hurry", None))

    def finish(self, hung: list[Any]) -> None:
        self.calls.append(("finish", len(hung)))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``started(driver, **settings)``: a lifecycle past its startup with ``driver``
    attached; no watchdog (it would end the test process), a short repeat window."""
    monkeypatch.setattr(ServerStops, "_arm_watchdog", lambda self: None)
    monkeypatch.setattr("django_graceful._core.stops.SAME_SIGNAL_WINDOW", 0.2)

    async def start(driver: Driver, **settings: Any) -> tuple[Lifecycle, ServerStops]:
        it = Lifecycle(settings=GracefulSettings(**{"HOOK_TIMEOUT": 1.0, **settings}))
        await it.startup(None, lambda: driver)
        assert it.driver is driver and it.phase == Phase.SERVING and it.stops is not None
        return it, it.stops

    return start


async def until(it: Lifecycle, phase: Phase, timeout: float = 5) -> None:
    reached = asyncio.Event()
    it.on_phase(lambda now: reached.set() if now >= phase else None, this_cycle=True)
    if it.phase < phase:
        await asyncio.wait_for(reached.wait(), timeout)


async def test_a_repeat_within_the_window_is_the_same_signal_and_a_later_one_escalates(
    started: Any,
) -> None:
    driver = RecordingDriver()
    it, stops = await started(driver, DRAIN_DELAY=30)
    assert stops.stop_requested(signal.SIGTERM) is True
    assert stops.stop_requested(signal.SIGINT) is False  # Ctrl-C's copy to the parent
    await until(it, Phase.DRAINING)
    assert it.trigger == "SIGTERM"
    await asyncio.sleep(0.3)
    assert it.phase == Phase.DRAINING
    assert stops.stop_requested(signal.SIGTERM) is True  # past the window: skip to CANCELLING
    await until(it, Phase.STOPPED)
    assert driver.calls[-1] == ("release", (signal.SIGTERM, False))


async def test_where_the_server_repeats_its_signal_only_a_quick_stop_escalates(
    started: Any,
) -> None:
    driver = RecordingDriver(quick=frozenset({signal.SIGQUIT}), repeats=False)
    it, stops = await started(driver, DRAIN_DELAY=30)
    stops.stop_requested(signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert stops.stop_requested(signal.SIGTERM) is True  # Gunicorn's arbiter, once a loop
    await asyncio.sleep(0.05)
    assert it.phase == Phase.DRAINING
    stops.stop_requested(signal.SIGQUIT)
    await until(it, Phase.STOPPED)
    # The server gets the first signal, and is told it was a quick stop.
    assert driver.calls[-1] == ("release", (signal.SIGTERM, True))


async def test_a_quick_stop_skips_draining(started: Any) -> None:
    driver = RecordingDriver(quick=frozenset({signal.SIGQUIT}))
    it, stops = await started(driver, DRAIN_DELAY=30)
    stops.stop_requested(signal.SIGQUIT)
    await until(it, Phase.STOPPED, timeout=3)
    assert driver.calls == [("finish", 0), ("release", (signal.SIGQUIT, True))]


async def test_a_worker_stopping_alone_stops_accepting_and_releases_its_server_at_once(
    started: Any,
) -> None:
    driver = RecordingDriver()
    it, stops = await started(driver, DRAIN_DELAY=30)
    stops.stop_requested(None, alone=True, trigger="recycle")
    assert driver.calls == [("stop_accepting", None)]
    await until(it, Phase.DRAINING)
    assert it.trigger == "recycle"
    # Without DRAINING's delay (siblings take the new connections), released before STOPPED.
    await until(it, Phase.STOPPED, timeout=3)
    assert driver.calls[:2] == [("stop_accepting", None), ("release", (None, False))]
    assert not stops.whole_server_stops()  # the door stays open for the siblings
    stops.stop_requested(signal.SIGTERM)  # after the release: the server is hurried
    assert driver.calls[-1] == ("hurry", None)


async def test_where_the_parent_keeps_the_sockets_the_stop_hands_over_at_once(
    started: Any,
) -> None:
    """A reloader's worker: it stops accepting and lets its server go at once (no SETTLE,
    no DRAINING), serves what still reaches it during CLOSING, and shuts no door."""
    driver = RecordingDriver(parent_keeps=True)
    it, stops = await started(driver, DRAIN_DELAY=30)
    stops.stop_requested(signal.SIGTERM)
    assert driver.calls == [("stop_accepting", None), ("release", (signal.SIGTERM, False))]
    assert stops.handing_over and not stops.whole_server_stops()
    await until(it, Phase.STOPPED, timeout=3)


async def test_where_the_next_process_listens_the_door_shuts_at_the_stop(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Granian's reloader: no parent keeps the socket; the door shuts at the signal and
    the server stops as after any signal, at STOPPED."""
    shut: list[bool] = []
    monkeypatch.setattr("django_graceful._core.stops.shut_now", lambda: shut.append(True) or True)
    driver = RecordingDriver(next_listens=True)
    it, stops = await started(driver, DRAIN_DELAY=30)
    stops.stop_requested(signal.SIGTERM)
    assert shut == [True] and stops.handing_over and stops.whole_server_stops()
    await until(it, Phase.CLOSING, timeout=1)  # no DRAINING's delay either
    await until(it, Phase.STOPPED, timeout=3)
    assert driver.calls[-1] == ("release", (signal.SIGTERM, False))


async def test_a_stop_waited_for_from_another_thread_runs_the_shutdown_until_the_release(
    started: Any,
) -> None:
    # The process's main thread exits while the server serves in a thread of its own.
    driver = RecordingDriver()
    it, stops = await started(driver, DRAIN_DELAY=0.3)
    waiting = asyncio.ensure_future(asyncio.to_thread(stops.stop_and_wait, "reload", None, {}))
    await until(it, Phase.DRAINING)
    assert it.trigger == "reload" and not waiting.done()
    assert await asyncio.wait_for(waiting, 5) is True
    assert it.phase == Phase.STOPPED
    assert driver.calls[-1] == ("release", (None, False))
    # Once released, asking again returns at once.
    assert await asyncio.to_thread(stops.stop_and_wait, "again", None, {}) is True


async def test_a_stop_from_another_thread_by_a_signal_takes_the_same_signal_for_a_repeat(
    started: Any,
) -> None:
    driver = RecordingDriver()
    it, stops = await started(driver, DRAIN_DELAY=30)
    waiting = asyncio.ensure_future(
        asyncio.to_thread(stops.stop_and_wait, "exit", signal.SIGINT, {})
    )
    await until(it, Phase.DRAINING)
    assert stops.stop_requested(signal.SIGINT) is False  # passed on by a parent: a repeat
    await asyncio.sleep(0.3)
    assert it.phase == Phase.DRAINING
    assert stops.stop_requested(signal.SIGINT) is True  # later: skip to CANCELLING
    assert await asyncio.wait_for(waiting, 5) is True
    assert driver.calls[-1] == ("release", (signal.SIGINT, False))
