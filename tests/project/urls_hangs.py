from django.urls import path

from . import views_hangs

urlpatterns = [
    path("swallower/", views_hangs.swallower),
    path("frozen/", views_hangs.frozen),
    path("busy/", views_hangs.busy),
    path("stuck-thread/", views_hangs.stuck_thread),
]
