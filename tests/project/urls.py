from django.urls import include, path

from . import views

urlpatterns = [
    path("slow/", views.slow),
    path("stubborn/", views.stubborn),
    path("state/", views.state),
    path("pid/", views.sync_pid),
    path("export/", views.export),
    path("guarded/", views.guarded),
    path("events/", views.events_stream),
    path("timed/", views.timed),
    path("sync-timed/", views.sync_timed),
    path("shielded/", views.shielded),
    path("class-timed/", views.SlowView.as_view()),
    path("health/", include("django_graceful.urls")),
]
