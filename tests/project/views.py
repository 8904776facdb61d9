"""Views of the test project."""

import asyncio
import os
import threading
import time

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View

from django_graceful import (
    CancelReason,
    RequestCancelled,
    cancellable,
    current_cancellation,
    shield,
)

from .events import record


async def slow(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("s", "1"))
    record("slow-begin", seconds=seconds)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record("slow-cancelled")
        await asyncio.sleep(0)  # cleanup may still await once
        record("slow-cleanup")
        raise
    body = "x" * int(request.GET.get("size", "1000"))
    record("slow-end")
    return HttpResponse(body)


#: Lets an in-process test end the stubborn view (a real server's process just exits).
RELEASE_STUBBORN = threading.Event()


async def stubborn(request: HttpRequest) -> HttpResponse:
    """Swallows every cancellation: the worst case for a shutdown."""
    record("stubborn-begin")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not RELEASE_STUBBORN.is_set():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            record("stubborn-swallowed")
    return HttpResponse("never")


async def state(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pool": request.state["pool"], "pid": os.getpid()})


def sync_pid(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def export(request: HttpRequest) -> HttpResponse:
    """A sync view that checks its token between rows, as a long export would."""
    token = request.cancellation  # type: ignore[attr-defined]
    same = token is current_cancellation()  # asgiref carried the context into this thread
    record("export-begin", same_token=same)
    rows = 0
    try:
        for rows in range(int(request.GET.get("rows", "10000"))):  # noqa: B007
            token.raise_if_cancelled()
            time.sleep(0.01)
    except RequestCancelled as exc:
        record("export-stopped", reason=str(exc.reason), rows=rows)
        raise
    return HttpResponse(f"{rows + 1} rows")


async def cleanup(request: HttpRequest, reason: CancelReason) -> None:
    mode = request.GET.get("cleanup", "ok")
    record("cleanup", reason=str(reason), mode=mode)
    if mode == "raise":
        raise RuntimeError("cleanup failed (test)")
    if mode == "hang":
        await asyncio.sleep(3600)


@cancellable(on_cancel=cleanup)
async def guarded(request: HttpRequest) -> HttpResponse:
    record("guarded-begin")
    await asyncio.sleep(float(request.GET.get("s", "600")))
    return HttpResponse("done")


@cancellable(timeout=0.3, on_cancel=cleanup)
async def timed(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(600)
    return HttpResponse("never")


@cancellable(timeout=0.3)
def sync_timed(request: HttpRequest) -> HttpResponse:
    while True:
        request.cancellation.raise_if_cancelled()  # type: ignore[attr-defined]
        time.sleep(0.01)


async def shielded(request: HttpRequest) -> HttpResponse:
    """Commit-then-publish that must not be cut in half by a disconnect or a shutdown."""
    record("shield-begin")
    try:
        async with shield(timeout=float(request.GET.get("t", "2"))):
            await asyncio.sleep(float(request.GET.get("body", "0.3")))
            record("committed", reason=str(request.cancellation.reason))  # type: ignore[attr-defined]
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        record("shield-cancelled")
        raise
    return HttpResponse("never")


@method_decorator(cancellable(timeout=0.3), name="dispatch")
class SlowView(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(600)
        return HttpResponse("never")


async def events_stream(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events until the client leaves or the server stops."""

    async def ticks():  # type: ignore[no-untyped-def]
        record("sse-open")
        n = 0
        try:
            while True:
                yield f"data: tick {n}\n\n"
                n += 1
                await asyncio.sleep(0.05)
        finally:
            record("sse-closed", ticks=n)

    return StreamingHttpResponse(ticks(), content_type="text/event-stream")
