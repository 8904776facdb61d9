"""URLs for bench/scale.py: the hello world (warm-up) and the view that never ends."""

from django.urls import path

from . import views, views_scale

urlpatterns = [
    path("hello/", views.hello),
    path("hang/", views_scale.hang),
]
