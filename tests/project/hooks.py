"""Hooks of the test project: each records that it ran."""

import asyncio
import os

from django.dispatch import receiver

from django_graceful import on_shutdown, on_startup
from django_graceful.signals import shutdown_started

from .events import record


@on_startup
async def started() -> None:
    if os.environ.get("GRACEFUL_TEST_FAIL_STARTUP"):
        raise RuntimeError("cache warm-up failed (test)")
    record("startup")


@receiver(shutdown_started)
def draining(sender, trigger, **kwargs) -> None:
    record("shutdown-started", trigger=trigger)


@on_shutdown
def raising_hook() -> None:
    if os.environ.get("GRACEFUL_TEST_RAISE_HOOK"):
        raise RuntimeError("producer flush failed (test)")


@on_shutdown(timeout=1)
async def flushed() -> None:
    record("shutdown")


@on_shutdown(timeout=0.5)
async def hanging_hook() -> None:
    if os.environ.get("GRACEFUL_TEST_HANG_HOOK"):
        record("hanging-hook")
        await asyncio.sleep(3600)
