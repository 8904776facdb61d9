"""The URLconf ``checkshutdown --static`` reads in tests/test_staticscan.py (never served)."""

from django.urls import include, path

from . import views_static as v

#: Included under a namespace: the scan walks nested resolvers too.
nested = (
    [
        path("bad-class/", v.BadClass.as_view()),
        path("bad-decorated/", v.BadDecorated.as_view()),
        path("again/", v.swallow_named),  # a view under two paths is one view
    ],
    "nested",
)

urlpatterns = [
    path("swallow/named/", v.swallow_named),
    path("swallow/base/", v.swallow_base),
    path("swallow/bare/", v.swallow_bare),
    path("swallow/group/", v.swallow_group),
    path("swallow/suppress/", v.swallow_suppress),
    path("swallow/finally/", v.swallow_finally),
    path("blocks/sleep/", v.blocks_sleep),
    path("blocks/io/", v.blocks_io),
    path("orm/", v.sync_orm),
    path("sync/long/", v.long_sync),
    path("sync/related/", v.long_sync_related),
    path("sync/cancellable/", v.long_sync_cancellable),
    path("sync/queryset/", v.long_sync_queryset),
    path("sync/iterator/", v.long_sync_iterator),
    path("sync/count/", v.long_sync_count),
    path("ignored/other-id/", v.ignored_other_id),
    path("classes/", include(nested, namespace="nested")),
    path("clean/", include("tests.project.urls_static_clean")),
]
