from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index),
    path("slow/", views.slow),
    path("export/", views.export),
    path("events/", views.events),
    path("timeout/", views.timeout),
    path("report/", views.report),
    path("order/", views.order),
    path("state/", views.state),
    path("produce/", views.produce),
    path("stubborn/", views.stubborn),  # a deliberately bad view, for checkshutdown --drill
    path("health/", include("django_graceful.urls")),
]
