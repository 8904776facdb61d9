"""Every driver, where its server's internals are not where its probe looks (here: no
server runs this process, as after a server release that moved them): one warning that
names the server, and the generic driver's behaviour (the stop signals still chained, so
draining starts at the signal and the watchdog bounds the exit)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from django_graceful._core.driver import Driver
from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.signal_chain import SIGNALS
from django_graceful.adapters import (
    daphne,
    detect,
    granian,
    gunicorn_asgi,
    gunicorn_uvicorn,
    hypercorn,
    uvicorn,
)
from django_graceful.adapters.gunicorn import Gunicorn

#: Each driver, and the name its one warning gives the server. Gunicorn's Uvicorn worker
#: says what its Uvicorn driver says: that finds nothing first.
DRIVERS = [
    pytest.param(driver, server, id=driver.name)
    for driver, server in (
        (uvicorn.UvicornDriver, "uvicorn"),
        (gunicorn_uvicorn.GunicornUvicornDriver, "uvicorn"),
        (gunicorn_asgi.GunicornAsgiDriver, "gunicorn (asgi worker)"),
        (hypercorn.HypercornDriver, "hypercorn"),
        (granian.GranianDriver, "Granian"),
        (daphne.DaphneDriver, "Daphne"),
    )
]


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize(("driver_class", "server"), DRIVERS)
async def test_a_driver_that_cannot_find_its_server_warns_once_and_stays_generic(
    driver_class: type[Driver],
    server: str,
    lifecycle: Lifecycle,
    caplog: pytest.LogCaptureFixture,
    restore_handlers: None,
) -> None:
    lifecycle.loop = asyncio.get_running_loop()
    driver = driver_class()
    with caplog.at_level(logging.WARNING, logger="django_graceful"):
        lifecycle.attach(driver)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{server} driver not engaged (")
    assert "using the generic driver" in warnings[0]
    assert driver.chain is not None  # SIGTERM/SIGINT reach the lifecycle first
    assert not driver.guards_teardown and not driver.holds_hung_work
    assert driver.server_limit() is None


def test_where_no_server_runs_the_generic_driver_is_chosen() -> None:
    assert type(detect()) is Driver


def test_an_arbiter_gunicorn_cannot_see_is_neither_listening_nor_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without /proc (macOS) the probe cannot tell a reload from a stop: a SIGTERM stops
    the whole server, and a worker that starts is never taken for one its arbiter stops."""

    def no_proc(path: str) -> list[str]:
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "listdir", no_proc)
    with socket.socket() as sock:
        probe = Gunicorn(SimpleNamespace(sockets=[sock]))
        assert probe.arbiter_holds_sockets() is None
        assert not probe.arbiter_listens() and not probe.arbiter_stopping()
