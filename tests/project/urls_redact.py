"""A URLconf whose paths carry data (an id, a token): for the tests of REDACT_PATHS."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from . import views_hangs


async def order(request: HttpRequest, id: int, token: str) -> HttpResponse:
    """Hangs like ``views_hangs.swallower`` (its CancelledError swallowed)."""
    return await views_hangs.swallower(request)


urlpatterns = [path("orders/<int:id>/<str:token>/", order)]
