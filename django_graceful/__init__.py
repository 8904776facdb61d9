"""django_graceful: start, stop and cancel Django work cleanly on any ASGI server.

The public names are imported when first used (PEP 562): importing the package, or its
pytest plugin ``django_graceful.testing`` in any pytest run, imports no Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cancel.decorators import cancellable
    from ._cancel.shielding import shield
    from ._core.background import ShutdownInProgress, spawn, start_thread
    from ._core.cancellation import CancellationToken, CancelReason, RequestCancelled
    from ._core.hooks import on_shutdown, on_startup
    from ._core.lifecycle import is_shutting_down
    from ._core.phases import Phase
    from ._core.registry import current_cancellation
    from ._serving.streams import endless

#: Each public name, by the module that defines it.
_PUBLIC = {
    "cancellable": "._cancel.decorators",
    "shield": "._cancel.shielding",
    "ShutdownInProgress": "._core.background",
    "spawn": "._core.background",
    "start_thread": "._core.background",
    "CancellationToken": "._core.cancellation",
    "CancelReason": "._core.cancellation",
    "RequestCancelled": "._core.cancellation",
    "current_cancellation": "._core.registry",
    "on_shutdown": "._core.hooks",
    "on_startup": "._core.hooks",
    "is_shutting_down": "._core.lifecycle",
    "Phase": "._core.phases",
    "endless": "._serving.streams",
}

__all__ = [
    "CancelReason",
    "CancellationToken",
    "Phase",
    "RequestCancelled",
    "ShutdownInProgress",
    "cancellable",
    "current_cancellation",
    "endless",
    "is_shutting_down",
    "on_shutdown",
    "on_startup",
    "shield",
    "spawn",
    "start_thread",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
