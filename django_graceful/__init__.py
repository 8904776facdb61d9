"""django_graceful: start, stop and cancel Django work cleanly on any ASGI server."""

from .cancellation import CancelReason, RequestCancelled
from .hooks import on_shutdown, on_startup
from .lifecycle import Phase, is_shutting_down

__all__ = [
    "CancelReason",
    "Phase",
    "RequestCancelled",
    "is_shutting_down",
    "on_shutdown",
    "on_startup",
]
