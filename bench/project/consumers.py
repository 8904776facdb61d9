"""The bench's websocket consumers: an echo in a group, with GracefulConsumerMixin and without."""

from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from django_graceful.channels import GracefulConsumerMixin


class PlainEcho(AsyncWebsocketConsumer):
    groups: ClassVar[list[str]] = ["bench"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class GracefulEcho(GracefulConsumerMixin, PlainEcho):
    """Closed with 1012 when the shutdown begins; its group discard runs."""
