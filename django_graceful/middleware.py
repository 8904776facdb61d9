"""GracefulMiddleware: gives every request ``request.state``, also behind a Channels router."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class GracefulMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        _attach_state(request)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        _attach_state(request)
        return await self.get_response(request)


def _attach_state(request: HttpRequest) -> None:
    if not hasattr(request, "state"):
        scope = getattr(request, "scope", None)
        request.state = scope.setdefault("state", {}) if scope is not None else {}  # type: ignore[attr-defined]
