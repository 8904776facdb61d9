"""Websockets at shutdown, in-process: the hook, the close frame, the disconnect, the bounds."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.exceptions import ImproperlyConfigured

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful._serving.handler import GracefulASGIHandler
from django_graceful._serving.websocket import websocket_session
from django_graceful.asgi import GracefulASGI
from django_graceful.channels import GracefulConsumerMixin
from tests.project.consumers import GROUP, EchoConsumer
from tests.project.routing import websocket_urlpatterns

from .inprocess import NO_SIGNALS, Events, start, stop, wait_for

FAST = {**NO_SIGNALS, "GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 0.5, "HOOK_TIMEOUT": 1}


@pytest.fixture
def channels_app(lifecycle: Lifecycle) -> GracefulASGI:
    router = ProtocolTypeRouter(
        {"http": GracefulASGIHandler(), "websocket": URLRouter(websocket_urlpatterns)}
    )
    return GracefulASGI(router, lifecycle=lifecycle)


def ws_scope(path: str, query: str = "") -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")],
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
        "subprotocols": [],
    }


async def connect(app: Any, path: str, query: str = "") -> ApplicationCommunicator:
    comm = ApplicationCommunicator(app, ws_scope(path, query))
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output(5))["type"] == "websocket.accept"
    return comm


async def echo(comm: ApplicationCommunicator, text: str, answer: str) -> None:
    """Send ``text``; the consumer must answer ``answer``."""
    await comm.send_input({"type": "websocket.receive", "text": text})
    assert await comm.receive_output(5) == {"type": "websocket.send", "text": answer}


async def outputs_until_close(comm: ApplicationCommunicator, timeout: float = 5) -> list[Any]:
    """What the app sends the client, up to and including its close; then the server's
    disconnect, as a server sends it once the client has answered the close."""
    seen = []
    while True:
        message = await comm.receive_output(timeout)
        seen.append(message)
        if message["type"] == "websocket.close":
            await comm.send_input({"type": "websocket.disconnect", "code": message["code"]})
            return seen


def group_members() -> set[str]:
    layer = get_channel_layer()
    return set(getattr(layer, "groups", {}).get(GROUP, {}))


@pytest.mark.parametrize(
    ("kind", "hello", "bye", "code"),
    [
        pytest.param("echo", ("hi", "echo:hi"), "bye", 1012, id="mixin-says-goodbye-1012"),
        pytest.param("plain", ("hi", "echo:hi"), None, 1012, id="plain-closed-with-1012-too"),
        pytest.param(
            "json", ('"hi"', '{"echo": "hi"}'), '{"bye": true}', 1001, id="json-configured-1001"
        ),
        pytest.param("sync", ("hi", "echo:hi"), "bye", 1012, id="sync-runs-its-sync-hook"),
    ],
)
async def test_a_consumer_says_goodbye_is_closed_with_its_code_and_its_disconnect_runs(
    channels_app: GracefulASGI,
    recorded: Events,
    settings: Any,
    kind: str,
    hello: tuple[str, str],
    bye: str | None,
    code: int,
) -> None:
    """``/ws/<kind>/``: its ``shutting_down()`` hook says ``bye`` (a consumer without
    GracefulConsumerMixin has no hook), then GracefulASGI closes it with ``code``."""
    settings.GRACEFUL = FAST
    lifespan, _ = await start(channels_app)
    comm = await connect(channels_app, f"/ws/{kind}/")
    await echo(comm, *hello)
    grouped = kind in ("echo", "plain")  # EchoMixin's consumers join GROUP
    if grouped:
        channel = (await wait_for(recorded, "ws-connect"))["channel"]
        assert channel in group_members()
    began = time.monotonic()
    channels_app.lifecycle.begin_shutdown("test")
    goodbye = [] if bye is None else [{"type": "websocket.send", "text": bye}]
    assert await outputs_until_close(comm) == [*goodbye, {"type": "websocket.close", "code": code}]
    await comm.wait(2)  # the consumer returned
    assert [(e["consumer"], e["code"]) for e in recorded("ws-disconnect")] == [(kind, code)]
    assert len(recorded("ws-shutting-down")) == (0 if bye is None else 1)
    if grouped:
        assert channel not in group_members()  # group_discard ran
    await stop(lifespan, 10)
    assert time.monotonic() - began < 1  # CLOSING ended once the websocket left
    assert len(channels_app.lifecycle.registry) == 0


@pytest.mark.parametrize(
    ("graceful", "bound", "logged"),
    [
        pytest.param(
            {"HOOK_TIMEOUT": 0.3},
            1,
            "EchoConsumer.shutting_down (WS /ws/echo/) did not finish within 0.3 s",
            id="by-hook-timeout",
        ),
        # At CANCELLING, the end of the grace, long before HOOK_TIMEOUT.
        pytest.param({"GRACE_PERIOD": 0.3, "HOOK_TIMEOUT": 5}, 0.8, None, id="by-the-grace"),
    ],
)
async def test_a_hook_that_hangs_is_cut_short_and_the_close_sent(
    channels_app: GracefulASGI,
    recorded: Events,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
    graceful: dict[str, Any],
    bound: float,
    logged: str | None,
) -> None:
    settings.GRACEFUL = {**FAST, **graceful}
    lifespan, _ = await start(channels_app)
    comm = await connect(channels_app, "/ws/echo/", "hook=600")
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, "django_graceful"):
        channels_app.lifecycle.begin_shutdown("test")
        assert await outputs_until_close(comm) == [{"type": "websocket.close", "code": 1012}]
    assert 0.25 < time.monotonic() - began < bound
    if logged is not None:
        assert logged in caplog.text
    await comm.wait(2)
    assert len(recorded("ws-hook-cancelled")) == 1
    assert [e["code"] for e in recorded("ws-disconnect")] == [1012]
    await stop(lifespan, 10)
    assert len(channels_app.lifecycle.registry) == 0


async def test_a_slow_disconnect_is_cancelled_after_the_grace(
    channels_app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    settings.GRACEFUL = {**FAST, "GRACE_PERIOD": 0.3}
    lifespan, _ = await start(channels_app)
    comm = await connect(channels_app, "/ws/plain/", "disconnect=600")
    began = time.monotonic()
    channels_app.lifecycle.begin_shutdown("test")
    assert await outputs_until_close(comm) == [{"type": "websocket.close", "code": 1012}]
    assert time.monotonic() - began < 0.2  # closed at CLOSING, not after the grace
    await wait_for(recorded, "ws-disconnect-cancelled")
    await stop(lifespan, 10)
    assert 0.3 < time.monotonic() - began < 1.2
    assert len(channels_app.lifecycle.registry) == 0
    await comm.wait(1)
    assert comm.future.cancelled()


async def test_a_disconnect_that_swallows_cancels_is_reported_and_does_not_hold_the_shutdown(
    channels_app: GracefulASGI, recorded: Events, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.GRACEFUL = {**FAST, "GRACE_PERIOD": 0.3, "CANCEL_TIMEOUT": 0.3}
    lifespan, _ = await start(channels_app)
    comm = await connect(channels_app, "/ws/plain/", "disconnect=1.2&stubborn=1")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, "django_graceful"):
        channels_app.lifecycle.begin_shutdown("test")
        assert await outputs_until_close(comm) == [{"type": "websocket.close", "code": 1012}]
        await stop(lifespan, 10)
    assert time.monotonic() - began < 0.3 + 0.3 + 0.5
    assert "hung at shutdown: websocket WS /ws/plain/ (cancelled" in caplog.text
    assert "in disconnect" in caplog.text  # where it hangs
    comm.future.cancel()


# -- the generic path, with a bare ASGI websocket app ---------------------------------


class Bare:
    """A websocket app without Channels; ``accept_gate`` holds its accept back (``hold_accept``
    until it is set), ``close_itself`` closes it right after the accept."""

    def __init__(self, *, hold_accept: bool = False, close_itself: bool = False) -> None:
        self.accept_gate = asyncio.Event()
        if not hold_accept:
            self.accept_gate.set()
        self.received: list[Any] = []
        self.late_send_error: BaseException | None = None
        self.close_itself = close_itself

    async def serve(self, lifecycle: Lifecycle) -> tuple[GracefulASGI, ApplicationCommunicator]:
        """This app under GracefulASGI with ``lifecycle``; it and its started lifespan."""
        app = GracefulASGI(self, lifecycle=lifecycle)
        lifespan, _ = await start(app)
        return app, lifespan

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await self.accept_gate.wait()
        await send({"type": "websocket.accept"})
        if self.close_itself:
            await send({"type": "websocket.close", "code": 1000})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                try:  # a goodbye after the close: dropped, not an error
                    await send({"type": "websocket.send", "text": "too late"})
                except BaseException as exc:
                    self.late_send_error = exc
                return


async def test_any_asgi_websocket_app_gets_a_disconnect_and_its_late_sends_are_dropped(
    lifecycle: Lifecycle,
    settings: Any,
) -> None:
    settings.GRACEFUL = FAST
    bare = Bare()
    app, lifespan = await bare.serve(lifecycle)
    comm = await connect(app, "/ws/")
    lifecycle.begin_shutdown("test")
    assert await outputs_until_close(comm) == [{"type": "websocket.close", "code": 1012}]
    await comm.wait(2)
    assert bare.received == [{"type": "websocket.disconnect", "code": 1012}]
    assert bare.late_send_error is None
    assert await comm.receive_nothing(0.1)
    await stop(lifespan, 10)


async def test_a_closed_websocket_stays_registered_until_the_server_confirms_bounded(
    lifecycle: Lifecycle,
    settings: Any,
) -> None:
    """Until the server's own disconnect the close frame may sit in a buffer that a
    stopping server drops (Daphne): the shutdown waits for it, at most CLOSE_HANDSHAKE."""
    settings.GRACEFUL = FAST
    app, lifespan = await Bare().serve(lifecycle)
    confirmed = await connect(app, "/ws/")
    silent = await connect(app, "/ws/")
    began = time.monotonic()
    lifecycle.begin_shutdown("test")
    for comm in (confirmed, silent):
        assert await comm.receive_output(2) == {"type": "websocket.close", "code": 1012}
    await asyncio.sleep(0.1)
    assert len(lifecycle.registry) == 2
    await confirmed.send_input({"type": "websocket.disconnect", "code": 1012})
    await confirmed.wait(1)
    assert [i.what for i in lifecycle.registry] == ["WS /ws/"]
    await silent.wait(2)
    assert 0.9 < time.monotonic() - began < 1.5  # CLOSE_HANDSHAKE
    assert len(lifecycle.registry) == 0
    await stop(lifespan, 10)


async def test_a_websocket_accepted_during_closing_is_closed_once_accepted(
    lifecycle: Lifecycle,
    settings: Any,
) -> None:
    settings.GRACEFUL = FAST
    bare = Bare(hold_accept=True)
    app, lifespan = await bare.serve(lifecycle)
    comm = ApplicationCommunicator(app, ws_scope("/ws/"))
    await comm.send_input({"type": "websocket.connect"})
    await asyncio.sleep(0.05)
    lifecycle.begin_shutdown("test")
    await asyncio.sleep(0.1)
    assert lifecycle.phase == Phase.CLOSING and await comm.receive_nothing(0.05)
    bare.accept_gate.set()
    assert await comm.receive_output(2) == {"type": "websocket.accept"}
    assert await outputs_until_close(comm) == [{"type": "websocket.close", "code": 1012}]
    await comm.wait(2)
    await stop(lifespan, 10)


async def test_a_websocket_the_app_closed_itself_is_left_to_the_server(
    lifecycle: Lifecycle,
    settings: Any,
) -> None:
    settings.GRACEFUL = FAST
    bare = Bare(close_itself=True)
    app, lifespan = await bare.serve(lifecycle)
    comm = await connect(app, "/ws/")
    assert await comm.receive_output(2) == {"type": "websocket.close", "code": 1000}
    lifecycle.begin_shutdown("test")
    assert await comm.receive_nothing(0.2)  # no second close from us
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})  # the server's
    await comm.wait(2)
    assert bare.received == [{"type": "websocket.disconnect", "code": 1000}]
    await stop(lifespan, 10)


async def test_a_client_that_leaves_during_the_hook_ends_it(
    channels_app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    settings.GRACEFUL = FAST
    lifespan, _ = await start(channels_app)
    comm = await connect(channels_app, "/ws/echo/", "hook=600")
    channels_app.lifecycle.begin_shutdown("test")
    await wait_for(recorded, "ws-shutting-down")
    await comm.send_input({"type": "websocket.disconnect", "code": 1001})
    await comm.wait(2)
    await wait_for(recorded, "ws-hook-cancelled")
    assert [e["code"] for e in recorded("ws-disconnect")] == [1001]
    assert await comm.receive_nothing(0.1)  # no close frame to a client that left
    await stop(lifespan, 10)


async def test_a_second_signal_skips_the_hooks(
    channels_app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    settings.GRACEFUL = FAST
    lifespan, _ = await start(channels_app)
    comm = await connect(channels_app, "/ws/echo/", "hook=600")
    began = time.monotonic()
    channels_app.lifecycle.begin_shutdown("test")
    await wait_for(recorded, "ws-shutting-down")
    channels_app.lifecycle.escalate()
    assert await outputs_until_close(comm) == [{"type": "websocket.close", "code": 1012}]
    assert time.monotonic() - began < 0.5
    await comm.wait(2)
    await stop(lifespan, 10)


async def test_the_session_is_in_the_scope_only_under_graceful_asgi(
    lifecycle: Lifecycle, settings: Any
) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(websocket_session(scope))
        await send({"type": "websocket.close"})

    settings.GRACEFUL = FAST
    comm = ApplicationCommunicator(GracefulASGI(app, lifecycle=lifecycle), ws_scope("/"))
    await comm.send_input({"type": "websocket.connect"})
    await comm.receive_output(5)
    await comm.wait(1)
    await lifecycle.shutdown("test")
    assert seen[0] is not None and seen[0].item.what == "WS /"
    assert websocket_session(ws_scope("/")) is None


async def test_the_mixin_outside_graceful_asgi_warns_once_and_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "django_graceful"):
        for _ in range(2):
            comm = ApplicationCommunicator(EchoConsumer.as_asgi(), ws_scope("/ws/echo/"))
            await comm.send_input({"type": "websocket.connect"})
            assert (await comm.receive_output(5))["type"] == "websocket.accept"
            await comm.send_input({"type": "websocket.disconnect", "code": 1000})
            await comm.wait(2)
    warnings = [r for r in caplog.records if "not served through GracefulASGI" in r.getMessage()]
    assert len(warnings) <= 1  # once per process (another test may have warned already)


def test_a_bad_close_code_fails_at_class_definition() -> None:
    with pytest.raises(ImproperlyConfigured, match="shutdown_close_code = 1006"):

        class Broken(GracefulConsumerMixin):
            shutdown_close_code = 1006

    class Fine(GracefulConsumerMixin):
        shutdown_close_code = 4000


def test_importing_django_graceful_does_not_import_channels() -> None:
    code = (
        "import sys, django; django.setup(); "
        "import django_graceful, django_graceful.asgi, django_graceful.channels, "
        "django_graceful.middleware; "
        "assert 'channels' not in sys.modules, sorted(m for m in sys.modules if 'channels' in m)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.project.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
