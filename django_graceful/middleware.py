"""GracefulMiddleware: ties each request to its view's task and token; gives ``request.state``.

On Django 5.2 the view runs in a task of its own that a cancel of the server's task
never reaches; recording it lets the shutdown cancel the view itself. Once the URL is
resolved it names the request's work after its view (and, with ``REDACT_PATHS``, after
its route instead of its path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from ._core.cancellation import NEVER, CancelReason, RequestCancelled, reset_token, use_token
from ._core.registry import Tracked, reset_item, route_label, use_item
from .asgi import TRACKED_KEY


class GracefulMiddleware:
    sync_capable = True
    async_capable = True
    #: Sync or async like the chain: Django awaits an async one, and a sync one in an
    #: async chain would cost a thread hop.
    process_view: Callable[[HttpRequest, Callable[..., Any], Any, Any], Awaitable[None] | None]

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self.process_view = self._aprocess_view if self.is_async else self._process_view

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        _attach_state(request)
        request.cancellation = NEVER  # type: ignore[attr-defined]  # WSGI: nothing to cancel
        return self.get_response(request)

    def _process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        """Name the request's work after its view (for snapshots and hang reports)."""
        _name_work(request, view)

    async def _aprocess_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        _name_work(request, view)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view (or its SQL) that stopped because it was told to is not a server error."""
        if isinstance(exception, RequestCancelled):
            return cancelled_response(exception.reason)
        return None

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        _attach_state(request)
        item = _tracked(request)
        if item is None:
            request.cancellation = NEVER  # type: ignore[attr-defined]
            return await self.get_response(request)
        item.view_task = asyncio.current_task()
        request.cancellation = token = item.token  # type: ignore[attr-defined]
        previous_token, previous_item = use_token(token), use_item(item)
        try:
            return await self.get_response(request)
        finally:
            reset_item(previous_item)
            reset_token(previous_token)
            item.view_task = None


#: Status of a response to work stopped for each reason (499: client closed request).
CANCELLED_STATUS = {
    CancelReason.DISCONNECT: 499,
    CancelReason.SHUTDOWN: 503,
    CancelReason.TIMEOUT: 504,
}


def cancelled_response(reason: CancelReason) -> HttpResponse:
    return HttpResponse(
        f"Request cancelled: {reason}.\n",
        status=CANCELLED_STATUS[reason],
        content_type="text/plain; charset=utf-8",
    )


def _name_work(request: HttpRequest, view: Callable[..., Any]) -> None:
    item = _tracked(request)
    if item is not None:
        item.view = view_path(request, view)
        item.sync_view = not iscoroutinefunction(view)
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        if item.redacted and isinstance(route, str):
            item.what = route_label(item.what, route)


def view_path(request: HttpRequest, view: Callable[..., Any]) -> str:
    """The view's dotted path, as Django's resolver names it (a class-based view's class)."""
    match = getattr(request, "resolver_match", None)
    path = getattr(match, "_func_path", None)
    if isinstance(path, str):
        return path
    view = getattr(view, "view_class", view)
    return f"{getattr(view, '__module__', '?')}.{getattr(view, '__qualname__', repr(view))}"


def _tracked(request: HttpRequest) -> Tracked | None:
    scope = getattr(request, "scope", None)
    return scope.get(TRACKED_KEY) if scope is not None else None


def _attach_state(request: HttpRequest) -> None:
    if not hasattr(request, "state"):
        scope = getattr(request, "scope", None)
        request.state = scope.setdefault("state", {}) if scope is not None else {}  # type: ignore[attr-defined]
