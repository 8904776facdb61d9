"""Views of the test project that hang in each way ``checkshutdown`` names.

The ``# hang:`` comments mark the lines a report must point at (tests find them by it).
"""

import asyncio
import threading
import time

from django.http import HttpRequest, HttpResponse, JsonResponse

from django_graceful import start_thread

from .events import record

#: Lets an in-process test end the loops below (a real server's process just exits).
RELEASE = threading.Event()


async def swallower(request: HttpRequest) -> HttpResponse:
    """Catches every cancellation and goes on: the seed's Daphne case."""
    record("swallower-begin")
    deadline = time.monotonic() + float(request.GET.get("s", "600"))
    while time.monotonic() < deadline and not RELEASE.is_set():
        try:
            await asyncio.sleep(0.05)  # hang: swallow-loop
        except asyncio.CancelledError:
            record("swallower-swallowed")
    return HttpResponse("released")


async def frozen(request: HttpRequest) -> HttpResponse:
    """Blocks the event loop with a sync sleep."""
    seconds = float(request.GET.get("s", "5"))
    record("frozen-begin", seconds=seconds)
    time.sleep(seconds)  # noqa: ASYNC251  # hang: frozen-sleep
    record("frozen-end")
    return HttpResponse("thawed")


def busy(request: HttpRequest) -> HttpResponse:
    """A sync view that never looks at its cancellation token."""
    record("busy-begin")
    deadline = time.monotonic() + float(request.GET.get("s", "10"))
    while time.monotonic() < deadline and not RELEASE.is_set():
        time.sleep(0.02)  # hang: busy-loop
    record("busy-end")
    return HttpResponse("done")


def _ignores_stop(stop: threading.Event) -> None:
    while not RELEASE.is_set():
        time.sleep(0.02)  # hang: stuck-thread


async def stuck_thread(request: HttpRequest) -> JsonResponse:
    """Starts a background thread that ignores its stop event."""
    thread = start_thread(_ignores_stop, name="ignores-stop")
    record("stuck-thread-started")
    return JsonResponse({"thread": thread.name})
