"""URLs of the bench project."""

from django.urls import path

from . import views

urlpatterns = [
    path("hello/", views.hello),
    path("slow/", views.slow),
    path("json/", views.json_view),
    path("stream/", views.stream),
]
