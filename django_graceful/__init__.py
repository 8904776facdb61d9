"""django_graceful: start, stop and cancel Django work cleanly on any ASGI server."""

from .background import ShutdownInProgress, spawn, start_thread
from .cancellation import CancellationToken, CancelReason, RequestCancelled, current_cancellation
from .decorators import cancellable
from .hooks import on_shutdown, on_startup
from .lifecycle import Phase, is_shutting_down
from .shielding import shield

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
