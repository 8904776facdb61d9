"""GracefulMiddleware: ties each request to its view's task and token; gives ``request.state``.

Under WSGI there is no task to tie and no lifespan state: see ``_core/wsgi.py``.

On Django 5.2 the view runs in a task of its own that a cancel of the server's task
never reaches; recording it lets the shutdown cancel the view itself. It hands the
request's tracked work the Django request, from which the work is named after its view
once the URL is resolved (and, with ``REDACT_PATHS``, after its route instead of its
path), when a snapshot or a log line first needs the name.
"""

from __future__ import annotations

from asyncio import current_task
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from ._core import wsgi
from ._core.cancellation import NEVER, CancellationToken, CancelReason, RequestCancelled
from ._core.registry import TrackedRequest, reset_item, use_item
from ._serving import threads
from ._serving.handler import GracefulASGIRequest
from .asgi import TRACKED_KEY
from .conf import get_settings


class GracefulMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            # Under GracefulASGI, on every request's path: no coroutine of our own, the
            # next handler's is the one awaited (in the task that awaits us: the view's).
            scope = getattr(request, "scope", None)
            item = scope.get(TRACKED_KEY) if scope is not None else None
            if item is None:  # not through GracefulASGI
                return self._acall(request)
            item.request = request
            if type(request) is not GracefulASGIRequest:  # it has both as properties
                _attach(request, item.token)
            task = current_task()
            if task is not item.task:  # Django 5.2: the view has a task of its own
                item.view_task = task
            return self.get_response(request)
        if wsgi.is_wsgi(request):
            return self._wsgi_call(request)
        _attach(request, NEVER)  # ASGI, behind a sync-only middleware: nothing tracked
        return self.get_response(request)

    def _wsgi_call(self, request: HttpRequest) -> Any:
        """Under WSGI: no lifespan state (a :class:`~._core.wsgi.WSGIState` that says so
        when read), and the request marked for ``spawn()``. Its work is not tracked (no
        shutdown reaches it), but has a token as under ASGI, the current cancellation of
        its code: ``@cancellable``'s timeout, the only thing that cancels it here, stops
        its SQL statement too."""
        wsgi.note_first_request()
        if not threads.attending:  # after GracefulASGI without reused threads (tests)
            threads.attend_request_ends(True)
        if not hasattr(request, "state"):  # unless a middleware before us gave one
            request.state = wsgi.WSGIState()  # type: ignore[attr-defined]
        item = TrackedRequest(request.method, request.path, redacted=get_settings().REDACT_PATHS)
        item.request = request
        request.cancellation = item.token  # type: ignore[attr-defined]
        marked, current = wsgi.enter_request(), use_item(item)
        try:
            return self.get_response(request)
        finally:
            reset_item(current)
            wsgi.leave_request(marked)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view (or its SQL) that stopped because it was told to is not a server error."""
        if isinstance(exception, RequestCancelled):
            return cancelled_response(exception.reason)
        return None

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        """Not through GracefulASGI: nothing tracked, the request gets ``state`` and a
        token that is never cancelled."""
        _attach(request, NEVER)
        return await self.get_response(request)


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


def _attach(request: HttpRequest, token: CancellationToken) -> None:
    """Give ``request`` its ``state`` (the scope's) and its ``cancellation``."""
    if not hasattr(request, "state"):
        scope = getattr(request, "scope", None)
        request.state = scope.setdefault("state", {}) if scope is not None else {}  # type: ignore[attr-defined]
    request.cancellation = token  # type: ignore[attr-defined]
