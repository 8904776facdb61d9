"""A URLconf whose paths carry data (an id, a token): for the tests of request labels."""

import asyncio

from django.http import HttpRequest, HttpResponse
from django.urls import path

from django_graceful import cancellable

from . import views_hangs


async def order(request: HttpRequest, id: int, token: str) -> HttpResponse:
    """Hangs like ``views_hangs.swallower`` (its CancelledError swallowed)."""
    return await views_hangs.swallower(request)


@cancellable(timeout=0.1)
async def timed_order(request: HttpRequest, id: int, token: str) -> HttpResponse:
    """Cancelled by its timeout: a 504, and an INFO line that names it."""
    await asyncio.sleep(600)
    return HttpResponse("never")


urlpatterns = [
    path("orders/<int:id>/<str:token>/", order),
    path("orders/<int:id>/<str:token>/timed/", timed_order),
]
