"""asgi_channels.py's app on a server whose websocket sends complete ``LATE`` s late.

On a loaded machine a server may complete an app's ``send`` well after the client has
read the frame: Granian resolves it on the event loop only once its own thread gets the
GIL back. Here every websocket message the app sends completes late, so the echo a
client has just read is still being sent when the test signals the shutdown.
"""

import asyncio
from typing import Any

from django_graceful.asgi import GracefulASGI

from .asgi_channels import application as on_time

#: Seconds each websocket message's ``send`` takes after the server's own has returned.
LATE = 1.0


class LateSends(GracefulASGI):
    """GracefulASGI given a server ``send`` that lingers after each websocket message
    (over RSGI too: ``__rsgi__`` serves a websocket through ``__call__``)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # type: ignore[override]
        if scope["type"] == "websocket":
            send = LateSend(send)
        await super().__call__(scope, receive, send)


class LateSend:
    """``send``, lingering ``LATE`` s after each websocket message. A wrapper as a
    middleware's (Sentry's) is: Daphne's driver finds the connection to close with 1012
    by the app's task, not in this ``send``."""

    def __init__(self, send: Any) -> None:
        self._send = send

    async def __call__(self, message: Any) -> None:
        await self._send(message)
        if message["type"] == "websocket.send":
            await asyncio.sleep(LATE)


application = LateSends(on_time.app)
