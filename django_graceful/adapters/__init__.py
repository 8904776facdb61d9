"""Server drivers: one module per server, each holding everything specific to it.

``detect()`` picks the driver for the server running this process; the contract they
implement is ``_core.driver.Driver`` (whose base class is the generic driver), and
``_versions`` holds what they share to check a server's version and to fall back to the
generic driver with one warning. What each reads of its server that the server does not
document is fenced in one probe per module, with the versions it was checked against.
"""

from __future__ import annotations

import sys

from .._core.driver import Driver

__all__ = ["Driver", "detect"]


def detect() -> Driver:
    """The driver for the server this process runs under."""
    from . import daphne, granian, gunicorn_asgi, gunicorn_uvicorn, hypercorn, uvicorn

    # Gunicorn's workers before uvicorn: its Uvicorn worker runs uvicorn's Server too.
    drivers: tuple[tuple[object, type[Driver]], ...] = (
        (daphne, daphne.DaphneDriver),
        (gunicorn_asgi, gunicorn_asgi.GunicornAsgiDriver),
        (gunicorn_uvicorn, gunicorn_uvicorn.GunicornUvicornDriver),
        (uvicorn, uvicorn.UvicornDriver),
        (hypercorn, hypercorn.HypercornDriver),
        (granian, granian.GranianDriver),
    )
    for module, driver in drivers:
        if module.running(sys.modules):  # type: ignore[attr-defined]
            return driver()
    return Driver()
