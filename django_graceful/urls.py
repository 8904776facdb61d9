"""``path("health/", include("django_graceful.urls"))``: ``ready/`` and ``live/``."""

from django.urls import path

from . import views

app_name = "graceful"
urlpatterns = [
    path("ready/", views.ready, name="ready"),
    path("live/", views.live, name="live"),
]
