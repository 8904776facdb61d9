"""The test project's app, plus a startup hook that takes a second (a signal can arrive
while a server without lifespan, Daphne, runs the startup on the first request)."""

import asyncio

from django_graceful import on_startup

from .asgi import application
from .events import record

__all__ = ["application"]


@on_startup(timeout=5)
async def warm_up_slowly() -> None:
    record("slow-startup-begin")
    await asyncio.sleep(1)
    record("slow-startup-end")
