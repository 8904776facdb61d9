"""The example's websocket consumer: echo, broadcast to everyone, and a goodbye at shutdown."""

import logging
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from django_graceful.channels import GracefulConsumerMixin

from .producer import producer

logger = logging.getLogger("example_project")

GROUP = "echo"


class EchoConsumer(GracefulConsumerMixin, AsyncWebsocketConsumer):
    """``ws/echo/``: a message comes back; ``/all text`` goes to every connected client.

    At shutdown, ``shutting_down()`` tells the client to reconnect, then
    django_graceful closes the socket with 1012 (Service Restart); ``disconnect()``
    and the group discard run as when a client leaves.
    """

    groups: ClassVar[list[str]] = [GROUP]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        text = text_data or ""
        producer.send(f"ws: {text}")  # every message also goes to the "Kafka" producer
        if text.startswith("/all "):
            event = {"type": "broadcast.message", "text": text.removeprefix("/all ")}
            await self.channel_layer.group_send(GROUP, event)
        else:
            await self.send(text_data=f"echo: {text}")

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=f"all: {event['text']}")

    async def shutting_down(self) -> None:
        await self.send(text_data="server restarting: reconnect in a moment")

    async def disconnect(self, code: int) -> None:
        logger.info("websocket %s closed (%s)", self.channel_name, code)
