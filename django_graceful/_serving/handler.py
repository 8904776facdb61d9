"""Django's ASGI handler with ``request.state`` (the LIFESPAN state of the scope), file
responses sent by their path where the server can (``http.response.pathsend``), and endless
streams that end at the shutdown as if their client had left (``streams.py``)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from typing import Any

from asgiref.sync import SyncToAsync
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import FileResponse, HttpResponseBase

from .._core.cancellation import NEVER, CancellationToken
from .._core.registry import CONTEXT_ITEM, reset_item, use_item
from .protocol import PATHSEND, TRACKED_KEY
from .streams import StreamEnded
from .threads import RequestContext


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

    @property
    def cancellation(self) -> CancellationToken:
        """The request's token (its tracked work's, made when first asked for; one that
        is never cancelled without GracefulASGI), unless one was set."""
        token = self.__dict__.get("_cancellation")
        if token is None:
            item = self.scope.get(TRACKED_KEY)
            token = item.token if item is not None else NEVER
        return token

    @cancellation.setter
    def cancellation(self, value: CancellationToken) -> None:
        self.__dict__["_cancellation"] = value


class _HeadSent(Exception):
    """Django's send_response has sent the head; the file went by its path."""


class GracefulASGIHandler(ASGIHandler):
    request_class = GracefulASGIRequest
    #: GracefulASGI leaves each request's tracked work to ``__call__`` to carry.
    carries_tracked_item = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Django's, whose ``ThreadSensitiveContext`` carries the request's tracked work
        (``RequestContext``). One entered before (``REUSE_SYNC_THREADS``'), which Django's
        would leave as it is, carries it already, or else the context variable does."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        item = scope.get(TRACKED_KEY)
        entered = SyncToAsync.thread_sensitive_context.get(None)
        if entered is None:
            async with RequestContext(item):
                await self.handle(scope, receive, send)
        elif item is None or getattr(entered, CONTEXT_ITEM, None) is item:
            await self.handle(scope, receive, send)
        else:
            previous = use_item(item)
            try:
                await self.handle(scope, receive, send)
            finally:
                reset_item(previous)

    async def send_response(self, response: HttpResponseBase, send: Any) -> None:
        """Django's, but a ``FileResponse`` of a whole file on disk goes by its path
        where the server takes ``http.response.pathsend`` (GracefulASGI's ``send`` says,
        as ``pathsend``); a ``StreamEnded`` from ``send`` ends the response quietly."""
        path = file_path(response) if isinstance(response, FileResponse) else None
        if path is None or not getattr(getattr(send, "__self__", send), "pathsend", False):
            try:
                await ASGIHandler.send_response(self, response, send)
            except StreamEnded:
                # Its endless stream was ended at the shutdown and it sent on: the client has
                # its complete response; Django closes the response as after any other.
                pass
            return

        async def head_then_path(message: Mapping[str, Any]) -> None:
            await send(message)  # http.response.start, with the headers Django built
            await send({"type": PATHSEND, "path": path})
            raise _HeadSent

        with contextlib.suppress(_HeadSent):
            await super().send_response(response, head_then_path)


def file_path(response: HttpResponseBase) -> str | None:
    """The absolute path of the file a ``FileResponse`` would stream whole and unchanged
    (a regular file read from its start, its Content-Length its size, no Content-Encoding
    from a middleware), or None."""
    if not isinstance(response, FileResponse) or response.has_header("Content-Encoding"):
        return None
    filelike = getattr(response, "file_to_stream", None)
    name = getattr(filelike, "name", None)
    if not isinstance(name, str) or filelike is None:
        return None
    try:
        opened = os.fstat(filelike.fileno())
        named = os.stat(name)
        whole = filelike.tell() == 0 and response.get("Content-Length") == str(opened.st_size)
    except (OSError, AttributeError, ValueError, TypeError):
        return None
    same = (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
    if not (whole and same and stat.S_ISREG(opened.st_mode)):
        return None
    return os.path.abspath(name)
