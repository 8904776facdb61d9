"""The plain project's URLs (settings_plain): the views a balancer's clients and probes use."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from . import views


def alive(request: HttpRequest) -> HttpResponse:
    """A health check without django_graceful: 200 while the process answers."""
    return HttpResponse("ok")


urlpatterns = [
    path("slow/", views.slow),
    path("health/ready/", alive),
    path("health/live/", alive),
]
