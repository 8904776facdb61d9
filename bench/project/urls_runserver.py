"""The runserver bench's one URL: which process answers (a reload starts a new one)."""

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path


async def pid(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [path("pid/", pid)]
