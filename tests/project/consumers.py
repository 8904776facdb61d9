"""Websocket consumers of the test project: with GracefulConsumerMixin and without.

Query-string knobs make one consumer misbehave at shutdown: ``?hook=S`` makes
``shutting_down()`` take S seconds, ``?disconnect=S`` makes ``disconnect()`` take S
seconds (swallowing cancels with ``?stubborn=1``).
"""

import asyncio
import time
from typing import Any, ClassVar
from urllib.parse import parse_qs

from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)

from django_graceful.channels import GracefulConsumerMixin

from .events import record

GROUP = "broadcast"


def knob(scope: dict[str, Any], name: str, default: float = 0.0) -> float:
    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    return float(values[0]) if values else default


class EchoMixin:
    """Echo ``text``, or send ``broadcast:text`` to every member of the group."""

    groups: ClassVar[list[str]] = [GROUP]
    kind = "?"

    async def connect(self) -> None:
        await self.accept()
        record("ws-connect", consumer=self.kind, channel=self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        if text_data.startswith("broadcast:"):
            event = {"type": "broadcast.message", "text": text_data.removeprefix("broadcast:")}
            await self.channel_layer.group_send(GROUP, event)
        else:
            await self.send(text_data=f"echo:{text_data}")

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=f"broadcast:{event['text']}")

    async def disconnect(self, code: int) -> None:
        record("ws-disconnect", consumer=self.kind, code=code, channel=self.channel_name)
        seconds = knob(self.scope, "disconnect")
        stubborn = knob(self.scope, "stubborn")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                record("ws-disconnect-cancelled", consumer=self.kind)
                if not stubborn:
                    raise
        record("ws-disconnect-end", consumer=self.kind)


class EchoConsumer(GracefulConsumerMixin, EchoMixin, AsyncWebsocketConsumer):
    kind = "echo"

    async def shutting_down(self) -> None:
        record("ws-shutting-down", consumer=self.kind)
        seconds = knob(self.scope, "hook")
        if seconds:
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                record("ws-hook-cancelled", consumer=self.kind)
                raise
        await self.send(text_data="bye")


class PlainConsumer(EchoMixin, AsyncWebsocketConsumer):
    """No mixin: GracefulASGI closes it all the same."""

    kind = "plain"


class GoingAwayConsumer(GracefulConsumerMixin, AsyncJsonWebsocketConsumer):
    """JSON, closed with 1001 Going Away."""

    shutdown_close_code = 1001

    async def connect(self) -> None:
        await self.accept()
        record("ws-connect", consumer="json")

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content})

    async def shutting_down(self) -> None:
        record("ws-shutting-down", consumer="json")
        await self.send_json({"bye": True})

    async def disconnect(self, code: int) -> None:
        record("ws-disconnect", consumer="json", code=code)


class SyncEchoConsumer(GracefulConsumerMixin, WebsocketConsumer):
    """A sync consumer: its plain ``def shutting_down`` runs in a thread."""

    def connect(self) -> None:
        self.accept()
        record("ws-connect", consumer="sync")

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=f"echo:{text_data}")

    def shutting_down(self) -> None:  # type: ignore[override]
        record("ws-shutting-down", consumer="sync")
        self.send(text_data="bye")

    def disconnect(self, code: int) -> None:
        record("ws-disconnect", consumer="sync", code=code)


class EventStreamConsumer(AsyncHttpConsumer):
    """Server-sent events as Channels' documentation streams them: ``handle()`` sends a
    tick each ``?tick=`` seconds (0.05) and reads no message while it loops."""

    async def handle(self, body: bytes) -> None:
        tick = knob(self.scope, "tick", 0.05)
        await self.send_headers(
            headers=[(b"Cache-Control", b"no-cache"), (b"Content-Type", b"text/event-stream")]
        )
        record("stream-open", kind="consumer")
        n = 0
        try:
            while True:
                await self.send_body(f"data: {n}\n\n".encode(), more_body=True)
                n += 1
                await asyncio.sleep(tick)
        finally:
            record("stream-closed", kind="consumer", n=n)
