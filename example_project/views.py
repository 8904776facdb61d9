"""Example views: a quick one, a slow one, and one that shows the LIFESPAN state."""

import asyncio
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger("example_project")


async def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from django_graceful. Try /slow/?seconds=5 then Ctrl-C.\n")


async def slow(request: HttpRequest) -> HttpResponse:
    """Sleeps ``seconds`` (default 5): send SIGTERM meanwhile and watch it drain."""
    seconds = float(request.GET.get("seconds", "5"))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        logger.info("slow view cancelled after the grace period; cleaning up")
        raise
    return HttpResponse(f"slept {seconds:g} s\n")


async def state(request: HttpRequest) -> JsonResponse:
    pool = request.state["pool"]
    return JsonResponse({"pool": pool["name"], "open": pool["open"]})
