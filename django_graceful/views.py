"""Health endpoints: readiness flips to 503 when draining starts; liveness answers from the loop.

``GracefulASGI`` lets them through after it starts refusing requests (CLOSING on), wherever
the URLconf includes them (:func:`is_health_probe`): a probe still hears the process.

Under WSGI no lifecycle runs (its phase stays NEW): both answer 200 while the process serves,
with :data:`WSGI_BODY`, which says so.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.log import log_response
from django.views.decorators.cache import never_cache

from ._core import wsgi
from ._core.lifecycle import get_lifecycle
from ._core.phases import Phase

#: Both endpoints' body under WSGI, where no lifecycle runs ("lifecycle": false): the
#: process serves, and readiness will not turn 503 before it stops (nothing drains).
WSGI_BODY = {"phase": "serving", "server": "wsgi", "lifecycle": False}


@never_cache
async def ready(request: HttpRequest) -> JsonResponse:
    """200 while serving; 503 from DRAINING on (and before startup finished). Under WSGI,
    200 (:data:`WSGI_BODY`)."""
    phase = get_lifecycle().phase
    if phase == Phase.NEW and wsgi.is_wsgi(request):
        return JsonResponse(WSGI_BODY)
    response = JsonResponse(
        {"phase": phase.name.lower()}, status=200 if phase == Phase.SERVING else 503
    )
    if response.status_code == 503:
        # Expected while starting or draining: logged as information, and Django, which
        # logs every 5xx as an error, skips a response logged already.
        log_response(
            "%s: %s",
            response.reason_phrase,
            request.path,
            response=response,
            request=request,
            level="info",
        )
    return response


@never_cache
async def live(request: HttpRequest) -> JsonResponse:
    """200 whenever the event loop answers (under WSGI, whenever the process answers)."""
    phase = get_lifecycle().phase
    if phase == Phase.NEW and wsgi.is_wsgi(request):
        return JsonResponse(WSGI_BODY)
    return JsonResponse({"phase": phase.name.lower()})


def is_health_probe(path_info: str) -> bool:
    """Whether ``path_info`` resolves to :func:`ready` or :func:`live` in the URLconf."""
    try:
        match = resolve(path_info)
    except Resolver404:
        return False
    return match.func in (ready, live)
