"""The clean views of views_static.py (and library views the scan must skip)."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView

from . import views_static as v

urlpatterns = [
    path("reraise/", v.clean_reraise),
    path("exception/", v.clean_except_exception),
    path("offloaded/", v.clean_offloaded),
    path("local-names/", v.clean_local_names),
    path("async-orm/", v.clean_async_orm),
    path("sync/checks/", v.clean_sync_checks),
    path("sync/token/", v.clean_sync_token),
    path("sync/trivial/", v.clean_trivial),
    path("sync/ordinary/", v.clean_ordinary_loops),
    path("class/", v.CleanClass.as_view()),
    path("sync-class/", v.CleanSyncClass.as_view()),
    path("sync-method/", v.CleanSyncMethod.as_view()),
    path("lambda/", lambda request: HttpResponse("a lambda")),
    path("ignored/line/", v.clean_ignored_line),
    path("ignored/view/", v.clean_ignored_view),
    path("ignored/class/", v.CleanIgnoredClass.as_view()),
    path("redirect/", RedirectView.as_view(url="/")),
    path("health/", include("django_graceful.urls")),
]
