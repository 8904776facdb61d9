"""django_graceful: start, stop and cancel Django work cleanly on any ASGI server."""

from .cancellation import CancellationToken, CancelReason, RequestCancelled, current_cancellation
from .hooks import on_shutdown, on_startup
from .lifecycle import Phase, is_shutting_down

__all__ = [
    "CancelReason",
    "CancellationToken",
    "Phase",
    "RequestCancelled",
    "current_cancellation",
    "is_shutting_down",
    "on_shutdown",
    "on_startup",
]
