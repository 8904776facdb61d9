from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index),
    path("slow/", views.slow),
    path("state/", views.state),
    path("health/", include("django_graceful.urls")),
]
