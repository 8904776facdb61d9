"""The lifecycle's policy: the budget fitted into a server's own kill timeout, and what
the server's stop requests mean (proved here with a driver that drives nothing; the
real servers' tests prove it on the wire)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import pytest

from django_graceful._core.driver import Control, Driver
from django_graceful._core.lifecycle import MIN_CANCEL, Lifecycle
from django_graceful._core.phases import Phase
from django_graceful.conf import GracefulSettings


def lifecycle(drain: float, grace: float, cancel: float, hook: float = 1.0) -> Lifecycle:
    """A lifecycle on these settings, with one LIFESPAN manager (never entered here) so
    that its hooks take ``hook`` seconds of the budget at least."""
    settings = GracefulSettings(
        DRAIN_DELAY=drain,
        GRACE_PERIOD=grace,
        CANCEL_TIMEOUT=cancel,
        HOOK_TIMEOUT=hook,
        LIFESPAN=("tests.project.lifespan.resources",),
    )
    return Lifecycle(settings=settings)


def hooks_of(it: Lifecycle) -> float:
    s = it.settings
    return it.budget() - s.DRAIN_DELAY - s.GRACE_PERIOD - s.CANCEL_TIMEOUT


def test_a_budget_that_fits_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    it = lifecycle(2, 20, 5)
    limit = it.budget() + 0.1
    with caplog.at_level(logging.WARNING, "django_graceful"):
        assert it.limit_budget(limit, "gunicorn's graceful_timeout") is True
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (2, 20, 5)
    assert caplog.records == []


def test_the_drain_delay_gives_way_first_then_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    it = lifecycle(2, 20, 5)
    hooks = hooks_of(it)
    with caplog.at_level(logging.WARNING, "django_graceful"):
        assert it.limit_budget(hooks + 15, "gunicorn's graceful_timeout") is True
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (0, 10, 5)
    assert it.budget() == pytest.approx(hooks + 15)
    message = caplog.records[0].getMessage()
    assert f"({hooks + 27:.1f} s) does not fit in gunicorn's graceful_timeout" in message
    assert f"({hooks + 15:.1f} s)" in message and "grace 10s" in message


def test_cancelled_work_keeps_a_moment_to_unwind_while_it_can() -> None:
    it = lifecycle(1, 3, 5)
    hooks = hooks_of(it)
    assert it.limit_budget(hooks + 2, "the server's timeout") is True
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (0, 0, 2)
    assert it.limit_budget(hooks + 0.2, "the server's timeout") is True
    assert it.settings.CANCEL_TIMEOUT == pytest.approx(0.2)
    assert MIN_CANCEL > 0.2  # the floor gave way only because nothing else could


def test_hooks_longer_than_the_limit_cannot_fit(caplog: pytest.LogCaptureFixture) -> None:
    it = lifecycle(1, 3, 5, hook=4)
    hooks = hooks_of(it)
    assert hooks >= 4
    with caplog.at_level(logging.WARNING, "django_graceful"):
        assert it.limit_budget(hooks / 2, "the server's timeout") is False
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (0, 0, 0)
    assert "it still does not fit" in caplog.records[0].getMessage()


# -- what a server's stop requests mean (the lifecycle's signal policy) --------------------


class RecordingDriver(Driver):
    """A driver that drives nothing: it records what the lifecycle asks of it."""

    def __init__(self, *, quick: frozenset[int] = frozenset(), repeats: bool = True) -> None:
        super().__init__()
        self.quick_signals = quick
        self.repeats_escalate = repeats
        self.calls: list[tuple[str, object]] = []

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
    monkeypatch.setattr(Lifecycle, "_arm_watchdog", lambda self: None)
    monkeypatch.setattr("django_graceful._core.lifecycle.SAME_SIGNAL_WINDOW", 0.2)

    async def start(driver: Driver, **settings: Any) -> Lifecycle:
        it = Lifecycle(settings=GracefulSettings(**{"HOOK_TIMEOUT": 1.0, **settings}))
        await it.startup(None, lambda: driver)
        assert it.driver is driver and it.phase == Phase.SERVING
        return it

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
    it = await started(driver, DRAIN_DELAY=30)
    assert it.stop_requested(signal.SIGTERM) is True
    await until(it, Phase.DRAINING)
    assert it.trigger == "SIGTERM"
    assert it.stop_requested(signal.SIGINT) is False  # Ctrl-C's copy to the parent
    await asyncio.sleep(0.3)
    assert it.phase == Phase.DRAINING
    assert it.stop_requested(signal.SIGTERM) is True  # past the window: skip to CANCELLING
    await until(it, Phase.STOPPED)
    assert driver.calls[-1] == ("release", (signal.SIGTERM, False))


async def test_where_the_server_repeats_its_signal_only_a_quick_stop_escalates(
    started: Any,
) -> None:
    driver = RecordingDriver(quick=frozenset({signal.SIGQUIT}), repeats=False)
    it = await started(driver, DRAIN_DELAY=30)
    it.stop_requested(signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert it.stop_requested(signal.SIGTERM) is True  # Gunicorn's arbiter, once a loop
    await asyncio.sleep(0.05)
    assert it.phase == Phase.DRAINING
    it.stop_requested(signal.SIGQUIT)
    await until(it, Phase.STOPPED)
    # The server gets the first signal, and is told it was a quick stop.
    assert driver.calls[-1] == ("release", (signal.SIGTERM, True))


async def test_a_quick_stop_skips_draining(started: Any) -> None:
    driver = RecordingDriver(quick=frozenset({signal.SIGQUIT}))
    it = await started(driver, DRAIN_DELAY=30)
    it.stop_requested(signal.SIGQUIT)
    await until(it, Phase.STOPPED, timeout=3)
    assert driver.calls == [("finish", 0), ("release", (signal.SIGQUIT, True))]


async def test_a_worker_stopping_alone_stops_accepting_and_releases_its_server_at_once(
    started: Any,
) -> None:
    driver = RecordingDriver()
    it = await started(driver, DRAIN_DELAY=30)
    it.stop_requested(None, alone=True, trigger="recycle")
    assert driver.calls == [("stop_accepting", None)]
    await until(it, Phase.DRAINING)
    assert it.trigger == "recycle"
    # Without DRAINING's delay (siblings take the new connections), released before STOPPED.
    await until(it, Phase.STOPPED, timeout=3)
    assert driver.calls[:2] == [("stop_accepting", None), ("release", (None, False))]
    assert not it._whole_server_stops()  # the door stays open for the siblings
    it.stop_requested(signal.SIGTERM)  # after the release: the server is hurried
    assert driver.calls[-1] == ("hurry", None)
