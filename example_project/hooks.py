"""Startup and shutdown hooks of the example project."""

import logging

from django_graceful import on_shutdown, on_startup

logger = logging.getLogger("example_project")


@on_startup
async def warm_up() -> None:
    logger.info("startup hook: warmed up")


@on_shutdown(timeout=3)
async def flush() -> None:
    logger.info("shutdown hook: flushed")
