from django.urls import path

from . import views_thread_state

urlpatterns = [
    path("", views_thread_state.found_and_left),
]
