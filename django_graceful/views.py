"""Health endpoints: readiness flips to 503 when draining starts; liveness answers from the loop."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from ._core.lifecycle import get_lifecycle
from ._core.phases import Phase


@never_cache
async def ready(request: HttpRequest) -> JsonResponse:
    """200 while serving; 503 from DRAINING on (and before startup finished)."""
    phase = get_lifecycle().phase
    return JsonResponse(
        {"phase": phase.name.lower()}, status=200 if phase == Phase.SERVING else 503
    )


@never_cache
async def live(request: HttpRequest) -> JsonResponse:
    """200 whenever the event loop answers."""
    return JsonResponse({"phase": get_lifecycle().phase.name.lower()})
