"""Server adapters: one module per server, each holding everything specific to it.

``detect()`` picks the adapter for the server running this process; the contract
they implement is ``base.ServerAdapter``, and ``_compat`` holds what they share to
check a server's version and to fall back to the generic adapter with one warning.
"""

from __future__ import annotations

import sys

from .base import ServerAdapter

__all__ = ["ServerAdapter", "detect"]


def detect() -> ServerAdapter:
    """The adapter for the server this process runs under."""
    from . import daphne, granian, gunicorn_asgi, gunicorn_uvicorn, hypercorn, uvicorn

    # Gunicorn's workers before uvicorn: its Uvicorn worker runs uvicorn's Server too.
    for module in (daphne, gunicorn_asgi, gunicorn_uvicorn, uvicorn, hypercorn, granian):
        if module.running(sys.modules):
            return module.Adapter()
    return ServerAdapter()
