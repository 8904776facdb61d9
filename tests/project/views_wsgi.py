"""Views that use each part of django_graceful, for the project served over WSGI."""

import asyncio
import threading
from collections.abc import Iterator

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from django_graceful import (
    cancellable,
    current_cancellation,
    is_shutting_down,
    shield,
    spawn,
    start_thread,
)

from .events import record


async def _later(label: str) -> None:
    """A task that outlives its request: records, after the response went, where it ran."""
    try:
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        record("wsgi-task-cancelled", label=label)
        raise
    record("wsgi-task-ran", label=label, thread=threading.current_thread().name)


def spawns(request: HttpRequest) -> JsonResponse:
    task = spawn(_later("sync"), name="from-a-sync-view")
    return JsonResponse({"task": task.get_name()})


async def spawns_async(request: HttpRequest) -> JsonResponse:
    task = spawn(_later("async"), name="from-an-async-view")
    return JsonResponse({"task": task.get_name()})


def spawns_while_streaming(request: HttpRequest) -> StreamingHttpResponse:
    """Spawns from its response's iterator: after the view returned, outside the request."""

    def body() -> Iterator[bytes]:
        yield b"streaming "
        spawn(_later("streaming"), name="from-a-streaming-response")
        yield b"spawned"

    return StreamingHttpResponse(body())


async def _forever() -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        record("wsgi-task-cancelled", label="forever")
        raise


async def _commits() -> None:
    """Commits in a shield (the exit's cancel waits for it), then waits for ever."""
    async with shield(timeout=5):
        record("wsgi-task-committing")
        await asyncio.sleep(0.3)
        record("wsgi-task-committed")
    await _forever()


def spawns_a_committer(request: HttpRequest) -> JsonResponse:
    spawn(_commits(), name="committer")
    return JsonResponse({})


def spawns_forever(request: HttpRequest) -> JsonResponse:
    """Spawns a task that only a cancel (at the process's exit) ends."""
    spawn(_forever(), name="forever")
    return JsonResponse({})


def _waits_for_stop(stop: threading.Event) -> None:
    stop.wait()
    record("wsgi-thread-stopped")


def starts_thread(request: HttpRequest) -> JsonResponse:
    """Starts a thread that runs until told to stop (at the process's exit)."""
    thread = start_thread(_waits_for_stop, name="waits-for-stop")
    return JsonResponse({"thread": thread.name, "alive": thread.is_alive()})


def token(request: HttpRequest) -> JsonResponse:
    """What a sync view learns of its cancellation and of the shutdown."""
    return JsonResponse(
        {
            "cancelled": request.cancellation.cancelled,  # type: ignore[attr-defined]
            "current": current_cancellation().cancelled,
            "shutting_down": is_shutting_down(),
            "state": dict(request.state),  # type: ignore[attr-defined]
        }
    )


@cancellable
def sync_guarded(request: HttpRequest) -> JsonResponse:
    request.cancellation.raise_if_cancelled()  # type: ignore[attr-defined]
    return JsonResponse({"done": True})


@cancellable(timeout=5)
async def async_guarded(request: HttpRequest) -> JsonResponse:
    async with shield(timeout=1):
        await asyncio.sleep(0.01)
    return JsonResponse({"done": True})
