"""The test clients Django teams drive ASGI apps with (asgi-lifespan, Starlette's TestClient,
httpx), one lifespan cycle each, many cycles in one process."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

with warnings.catch_warnings():  # Starlette now prefers httpx2; httpx is what teams have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from django_graceful import signals
from django_graceful._core.lifecycle import Lifecycle, StartupFailed
from django_graceful._core.phases import Phase
from django_graceful._core.signal_chain import SIGNALS
from django_graceful._diagnosis import publisher
from django_graceful._serving.handler import GracefulASGIHandler
from django_graceful.asgi import GracefulASGI

pytestmark = pytest.mark.timeout(60)

CYCLES = 3
#: Each client call is bounded: a cycle that hangs fails the test, it does not hold it.
BOUND = 10.0

_numbers = itertools.count(1)


@asynccontextmanager
async def numbered(app: Any) -> AsyncIterator[dict[str, Any]]:
    """A LIFESPAN manager whose state says which cycle entered it."""
    yield {"pool": f"pool-{next(_numbers)}"}


GRACEFUL = {"LIFESPAN": [f"{__name__}.numbered"], "DRAIN_DELAY": 0}


async def get(app: Any, path: str) -> httpx.Response:
    """A GET of ``path`` through httpx's ASGI transport (which sends no lifespan)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


@pytest.fixture
def application(lifecycle: Lifecycle, tmp_path: Any, settings: Any) -> Iterator[GracefulASGI]:
    """The project's app on the process's lifecycle (fresh for this test), with signals
    handled and snapshots published, as ``asgi.py`` makes it."""
    settings.GRACEFUL = {**GRACEFUL, "STATE_DIR": str(tmp_path)}
    listener = publisher.install()
    try:
        yield GracefulASGI(GracefulASGIHandler())
    finally:
        lifecycle._phase_listeners.remove(listener)


@pytest.fixture
def hooks() -> Iterator[list[str]]:
    """What the startup and shutdown hooks saw, in order."""
    seen: list[str] = []

    async def started(sender: Any, state: dict[str, Any], **kwargs: Any) -> None:
        seen.append(f"startup {state['pool']}")

    async def stopped(sender: Any, **kwargs: Any) -> None:
        seen.append("shutdown")

    signals.startup.connect(started)
    signals.shutdown.connect(stopped)
    yield seen
    signals.startup.disconnect(started)
    signals.shutdown.disconnect(stopped)


@pytest.fixture
def failing_startup() -> Iterator[None]:
    async def fails(sender: Any, **kwargs: Any) -> None:
        raise ValueError("database unreachable (test)")

    signals.startup.connect(fails)
    yield
    signals.startup.disconnect(fails)


def handlers() -> dict[int, Any]:
    """The Python-level SIGTERM/SIGINT handlers and the running loop's own, if any."""
    found: dict[int, Any] = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        loop_handlers = getattr(asyncio.get_running_loop(), "_signal_handlers", {})
    except RuntimeError:
        loop_handlers = {}
    found.update({-s: loop_handlers.get(s) for s in SIGNALS})
    return found


def heartbeats() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "graceful-heartbeat"}


def wait_for_heartbeats_to_end(earlier: set[threading.Thread]) -> None:
    """Ours end soon after STOPPED (told to, not waited for); other tests' may linger."""
    for thread in heartbeats() - earlier:
        thread.join(BOUND)
        assert not thread.is_alive()


async def test_asgi_lifespan_runs_three_full_cycles_with_fresh_state_and_signals_put_back(
    application: GracefulASGI, hooks: list[str]
) -> None:
    before, earlier = handlers(), heartbeats()
    pools = []
    for _ in range(CYCLES):
        async with LifespanManager(application, BOUND, BOUND) as manager:
            assert handlers() != before  # the signals are ours while the cycle serves
            response = await get(manager.app, "/state/")
            assert response.status_code == 200, response.text
            pools.append(response.json()["pool"])
        assert application.lifecycle.phase == Phase.STOPPED
        assert handlers() == before
        wait_for_heartbeats_to_end(earlier)
    assert len(set(pools)) == CYCLES
    assert hooks == [line for pool in pools for line in (f"startup {pool}", "shutdown")]


def test_starlette_testclient_runs_three_full_cycles_without_a_warning(
    application: GracefulASGI, hooks: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    before, earlier = handlers(), heartbeats()
    pools = []
    for _ in range(CYCLES):
        with TestClient(application) as client:
            response = client.get("/state/")
            assert response.status_code == 200, response.text
            pools.append(response.json()["pool"])
        assert application.lifecycle.phase == Phase.STOPPED
    assert len(set(pools)) == CYCLES
    assert hooks == [line for pool in pools for line in (f"startup {pool}", "shutdown")]
    assert handlers() == before
    wait_for_heartbeats_to_end(earlier)
    # TestClient runs the app in a thread of its own: no signals to see, and no news.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings, [r.getMessage() for r in warnings]
    assert "not in the main thread" in caplog.text


async def test_a_failing_startup_raises_its_message_from_asgi_lifespan(
    application: GracefulASGI, failing_startup: None
) -> None:
    before = handlers()
    with pytest.raises(StartupFailed, match=r"raised ValueError: database unreachable \(test\)"):
        async with LifespanManager(application, BOUND, BOUND):
            pass
    assert handlers() == before


def test_a_failing_startup_raises_its_message_from_starlette_testclient(
    application: GracefulASGI, failing_startup: None
) -> None:
    before = handlers()
    with (
        pytest.raises(StartupFailed, match=r"raised ValueError: database unreachable \(test\)"),
        TestClient(application),
    ):
        pass
    assert handlers() == before


async def test_a_lifespan_after_a_failed_one_is_a_fresh_cycle(
    application: GracefulASGI, hooks: list[str]
) -> None:
    async def fails_once(sender: Any, **kwargs: Any) -> None:
        signals.startup.disconnect(fails_once)
        raise ValueError("database unreachable (test)")

    signals.startup.connect(fails_once)
    with pytest.raises(StartupFailed):
        async with LifespanManager(application, BOUND, BOUND):
            pass
    async with LifespanManager(application, BOUND, BOUND) as manager:
        assert (await get(manager.app, "/state/")).status_code == 200
    assert hooks[-1] == "shutdown"


async def test_a_lifespan_after_requests_on_a_closed_loop_starts_and_shuts_down_cleanly(
    application: GracefulASGI, hooks: list[str]
) -> None:
    """An earlier test used the app without lifespan, with httpx on a loop since closed."""
    before = handlers()
    without_lifespan = asyncio.to_thread(asyncio.run, get(application, "/pid/"))
    assert (await asyncio.wait_for(without_lifespan, BOUND)).status_code == 200
    async with LifespanManager(application, BOUND, BOUND) as manager:
        assert (await get(manager.app, "/state/")).status_code == 200
    assert application.lifecycle.phase == Phase.STOPPED
    assert hooks[-1] == "shutdown" and len(hooks) == 3  # two startups, one shutdown
    assert handlers() == before


async def test_requests_without_lifespan_on_a_new_loop_are_served_after_a_closed_one(
    application: GracefulASGI, hooks: list[str]
) -> None:
    for _ in range(2):
        on_a_new_loop = asyncio.to_thread(asyncio.run, get(application, "/state/"))
        assert (await asyncio.wait_for(on_a_new_loop, BOUND)).status_code == 200
    assert [line.split()[0] for line in hooks] == ["startup", "startup"]


AFTER_ASYNCIO_RUN = """
import asyncio, os, signal, sys, time
import django
django.setup()
from asgi_lifespan import LifespanManager
from django_graceful.asgi import get_asgi_application

application = get_asgi_application()

async def cycle():
    async with LifespanManager(application, 10, 10):
        pass

for _ in range(2):
    asyncio.run(cycle())
print("cycles done", flush=True)
os.kill(os.getpid(), signal.{signal})
time.sleep(5)
print("still alive", flush=True)
"""


@pytest.mark.parametrize(
    ("name", "returncode", "said"),
    [("SIGTERM", -signal.SIGTERM, ""), ("SIGINT", -signal.SIGINT, "KeyboardInterrupt")],
)
def test_after_asyncio_run_a_signal_does_what_it_does_without_us(
    name: str, returncode: int, said: str
) -> None:
    """SIGTERM ends the process (143 in a shell), Ctrl-C raises KeyboardInterrupt (130): not
    'Event loop is closed', not an exit 0, not a watchdog 19 s later."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.project.settings"}
    env["GRACEFUL_TEST_SETTINGS"] = json.dumps(GRACEFUL)
    done = subprocess.run(
        [sys.executable, "-c", AFTER_ASYNCIO_RUN.replace("{signal}", name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == returncode, done.stderr
    assert done.stdout == "cycles done\n"
    assert said in done.stderr and "Event loop is closed" not in done.stderr
