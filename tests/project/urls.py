from django.urls import include, path

from . import views

urlpatterns = [
    path("slow/", views.slow),
    path("stubborn/", views.stubborn),
    path("state/", views.state),
    path("pid/", views.sync_pid),
    path("export/", views.export),
    path("health/", include("django_graceful.urls")),
]
