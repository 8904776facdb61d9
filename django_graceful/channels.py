"""GracefulConsumerMixin: a Channels websocket consumer says goodbye, then closes with 1012.

It needs no import of Channels (an optional extra): it only wraps the consumer's ASGI
``__call__``, and works with any consumer class that has one.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ._serving.protocol import WS_SERVICE_RESTART, valid_close_code
from ._serving.websocket import websocket_session

logger = logging.getLogger("django_graceful")

_warned_unserved = False


class GracefulConsumerMixin:
    """Put it first in the bases of a websocket consumer::

        class Chat(GracefulConsumerMixin, AsyncJsonWebsocketConsumer):
            shutdown_close_code = 1001  # default 1012 (Service Restart)

            async def shutting_down(self):
                await self.send_json({"type": "bye", "reconnect_in": 2})

    Served through ``GracefulASGI``, when the shutdown's CLOSING phase begins an
    accepted connection gets ``shutting_down()`` (bounded by ``HOOK_TIMEOUT``), then
    a close frame with ``shutdown_close_code``, then ``websocket.disconnect`` with
    that code: the consumer's group discards and ``disconnect(code)`` run as when a
    client leaves. What has not ended when the grace period is over is cancelled.

    Without the mixin a consumer is closed the same way, with 1012 and no hook.
    On a sync ``WebsocketConsumer`` write ``def shutting_down(self)`` (plain ``def``):
    it runs in a thread of its own, where ``self.send()`` works as in any handler.
    """

    #: The close code sent at shutdown: 1012 (Service Restart) or e.g. 1001 (Going Away).
    shutdown_close_code: int = WS_SERVICE_RESTART

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not valid_close_code(cls.shutdown_close_code):
            raise ImproperlyConfigured(
                f"{cls.__qualname__}.shutdown_close_code = {cls.shutdown_close_code!r} is not a "
                "close code a server may send: use 1000-1003, 1007-1014 or 3000-4999 "
                "(1012 Service Restart, 1001 Going Away)."
            )

    async def shutting_down(self) -> None:
        """Called once the shutdown begins, before the close frame; the connection is
        still open (e.g. tell the client when to reconnect). Default: nothing."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        session = websocket_session(scope)
        if session is not None:
            session.close_code = self.shutdown_close_code
            if type(self).shutting_down is not GracefulConsumerMixin.shutting_down:
                session.add_hook(self.shutting_down)
        elif scope.get("type") == "websocket":
            _warn_unserved(type(self))
        return await super().__call__(scope, receive, send)  # type: ignore[misc]


def _warn_unserved(cls: type) -> None:
    global _warned_unserved
    if not _warned_unserved:
        _warned_unserved = True
        logger.warning(
            "%s uses GracefulConsumerMixin but is not served through GracefulASGI: "
            "it will not be closed at shutdown (wrap the ProtocolTypeRouter in GracefulASGI)",
            cls.__qualname__,
        )
