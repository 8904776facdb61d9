"""The runserver bench's URLs: which process answers (a reload starts a new one), and an
event stream with no end of its own (a client holding it open across a reload)."""

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path

from .views import events


async def pid(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [path("pid/", pid), path("events/", events)]
