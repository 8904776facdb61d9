"""What bench/scale.py holds open: a view that never ends, a websocket consumer that stays open.

Both write a mark when they begin (``BENCH_MARKS``), so the benchmark knows when the
server has every connection in flight. ``HoldConsumer`` is the plain Channels consumer
(asgi_scale.py adds ``GracefulConsumerMixin`` to it); nothing here imports django_graceful,
so the plain variant runs without it.
"""

import asyncio

from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import HttpRequest, HttpResponse

from .views import mark

#: How long the hung view sleeps: longer than any benchmark waits.
HANG_SECONDS = 3600.0


async def hang(request: HttpRequest) -> HttpResponse:
    """Mark ``hang``, then sleep for an hour: only a shutdown (or a cancel) ends it."""
    mark("hang")
    await asyncio.sleep(HANG_SECONDS)
    return HttpResponse(b"woke up\n", content_type="text/plain")


class HoldConsumer(AsyncWebsocketConsumer):
    """Accepts, marks ``ws-open`` and waits for whatever comes (no group, no layer)."""

    async def connect(self) -> None:
        await self.accept()
        mark("ws-open")
