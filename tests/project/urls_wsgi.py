from django.urls import path

from . import views_wsgi as views

urlpatterns = [
    path("spawn/", views.spawns),
    path("spawn-async/", views.spawns_async),
    path("spawn-forever/", views.spawns_forever),
    path("spawn-committer/", views.spawns_a_committer),
    path("spawn-streaming/", views.spawns_while_streaming),
    path("thread/", views.starts_thread),
    path("token/", views.token),
    path("sync-guarded/", views.sync_guarded),
    path("async-guarded/", views.async_guarded),
]
