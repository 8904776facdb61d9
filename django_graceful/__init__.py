"""django_graceful: start, stop and cancel Django work cleanly on any ASGI server."""

from ._cancel.decorators import cancellable
from ._cancel.shielding import shield
from ._core.background import ShutdownInProgress, spawn, start_thread
from ._core.cancellation import (
    CancellationToken,
    CancelReason,
    RequestCancelled,
    current_cancellation,
)
from ._core.hooks import on_shutdown, on_startup
from ._core.lifecycle import is_shutting_down
from ._core.phases import Phase

__all__ = [
    "CancelReason",
    "CancellationToken",
    "Phase",
    "RequestCancelled",
    "ShutdownInProgress",
    "cancellable",
    "current_cancellation",
    "is_shutting_down",
    "on_shutdown",
    "on_startup",
    "shield",
    "spawn",
    "start_thread",
]
