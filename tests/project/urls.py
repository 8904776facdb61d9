from django.urls import include, path

from . import views

urlpatterns = [
    path("slow/", views.slow),
    path("stubborn/", views.stubborn),
    path("state/", views.state),
    path("pid/", views.sync_pid),
    path("export/", views.export),
    path("gives-up/", views.gives_up),
    path("guarded/", views.guarded),
    path("events/", views.events_stream),
    path("timed/", views.timed),
    path("sync-timed/", views.sync_timed),
    path("shielded/", views.shielded),
    path("class-timed/", views.SlowView.as_view()),
    path("sql/sqlite/", views.sql_sqlite),
    path("sql/sqlite-async/", views.sql_sqlite_async),
    path("sql/pg/", views.sql_pg),
    path("sql/sqlite-timed/", views.sql_sqlite_timed),
    path("sql/sqlite-async-timed/", views.sql_sqlite_async_timed),
    path("sql/pg-timed/", views.sql_pg_timed),
    path("sql/ping/", views.sql_ping),
    path("sql/pg-backend/", views.pg_backend),
    path("download/", views.download),
    path("bulk/", views.bulk),
    path("thread/", views.sync_thread),
    path("leaves-a-task/", views.leaves_a_task),
    path("health/", include("django_graceful.urls")),
    path("hangs/", include("tests.project.urls_hangs")),
    path("thread-state/", include("tests.project.urls_thread_state")),
]
