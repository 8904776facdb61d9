"""URLs of the bench project."""

from django.urls import path

from . import views, views_db

urlpatterns = [
    path("hello/", views.hello),
    path("slow/", views.slow),
    path("json/", views.json_view),
    path("stream/", views.stream),
    path("events/", views.events),
    path("sync/json/", views_db.sync_json),
    path("sync/pg/", views_db.pg),
    path("backends/", views_db.backends),
    path("collect/", views_db.collect),
]
