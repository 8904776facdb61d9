"""Startup and shutdown hooks of the example project, and the background work they start."""

import asyncio
import logging

from channels.layers import get_channel_layer

from django_graceful import is_shutting_down, on_shutdown, on_startup, spawn, start_thread

from .consumers import GROUP
from .producer import producer

logger = logging.getLogger("example_project")

#: Seconds between two ticks of the periodic task.
TICK = 5.0
#: How often the periodic task looks at is_shutting_down() while it waits.
GLANCE = 0.25


@on_startup
async def warm_up() -> None:
    logger.info("startup hook: warmed up")


@on_startup
async def start_background_work() -> None:
    """One producer thread and one periodic task per worker process."""
    start_thread(producer.run, name="example-producer")
    spawn(tick(), name="example-tick")


async def tick() -> None:
    """Every TICK seconds: tell every websocket client, and produce a message.

    It stops by itself once the shutdown begins (within GLANCE seconds); were it
    still running after the grace period, it would be cancelled with the rest.
    """
    layer = get_channel_layer()
    n = 0
    while not is_shutting_down():
        n += 1
        producer.send(f"tick {n}")
        if layer is not None:
            await layer.group_send(GROUP, {"type": "broadcast.message", "text": f"tick {n}"})
        for _ in range(round(TICK / GLANCE)):
            if is_shutting_down():
                break
            await asyncio.sleep(GLANCE)
    logger.info("periodic task: stopped after %d tick(s)", n)


@on_shutdown(timeout=3)
async def flush() -> None:
    logger.info("shutdown hook: flushed")
