"""Views of the test project."""

import asyncio
import os
import threading
import time

from django.http import HttpRequest, HttpResponse, JsonResponse

from django_graceful import RequestCancelled, current_cancellation

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
