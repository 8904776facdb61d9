"""Django's ASGI handler with ``request.state``: the LIFESPAN state of the scope."""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIHandler, ASGIRequest


class GracefulASGIRequest(ASGIRequest):
    # The server's scope dict itself (Django keeps it as it came), which the LIFESPAN
    # state is written to; django-stubs types the attribute as a read-only Mapping.
    scope: dict[str, Any]

    @property
    def state(self) -> dict[str, Any]:
        """The merged state of the ``GRACEFUL['LIFESPAN']`` managers (a per-request copy)."""
        return self.scope.setdefault("state", {})

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self.scope["state"] = value


class GracefulASGIHandler(ASGIHandler):
    request_class = GracefulASGIRequest
