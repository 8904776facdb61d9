"""One lifecycle, many lifespan cycles in a row: each one owns its phases, state and listeners."""

from __future__ import annotations

from typing import Any

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful.conf import GracefulSettings

QUIET = GracefulSettings(HANDLE_SIGNALS=False, LIFESPAN=())


async def test_a_listener_of_one_cycle_hears_nothing_of_the_next() -> None:
    lifecycle = Lifecycle(settings=QUIET)
    every: list[Phase] = []
    first: list[Phase] = []
    lifecycle.on_phase(every.append)
    await lifecycle.startup(None)
    lifecycle.on_phase(first.append, this_cycle=True)
    await lifecycle.shutdown()
    await lifecycle.startup(None)
    await lifecycle.shutdown()
    assert first == [
        Phase.DRAINING,
        Phase.CLOSING,
        Phase.CANCELLING,
        Phase.REPORTING,
        Phase.STOPPED,
    ]
    assert every.count(Phase.STARTING) == 2 and every.count(Phase.STOPPED) == 2


async def test_the_next_cycle_starts_with_fresh_state_and_work() -> None:
    lifecycle = Lifecycle(settings=QUIET)
    await lifecycle.startup(None)
    lifecycle.state["left"] = "over"
    registry: Any = lifecycle.registry
    await lifecycle.shutdown()
    await lifecycle.startup(None)
    assert lifecycle.phase == Phase.SERVING
    assert lifecycle.state == {} and lifecycle.registry is not registry
    await lifecycle.shutdown()
