"""The test project's app, plus async hooks that raise what would end the process (were it
not contained): ``SystemExit`` when draining begins, ``KeyboardInterrupt`` at shutdown."""

from django.dispatch import receiver

from django_graceful import on_shutdown
from django_graceful.signals import shutdown_started

from .asgi import application

__all__ = ["application"]


@receiver(shutdown_started)
async def exits_when_draining(sender, **kwargs) -> None:
    raise SystemExit(3)


@on_shutdown
async def interrupts_on_shutdown() -> None:
    raise KeyboardInterrupt
