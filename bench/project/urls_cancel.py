"""URLs for bench/cancel.py: the plain views, and their ``@cancellable`` twins where installed.

Plain Django (``settings_cancel_plain``) never imports django_graceful.
"""

from django.conf import settings
from django.urls import path

from . import views, views_cancel

urlpatterns = [
    path("hello/", views.hello),
    path("wait/", views_cancel.wait),
]

if "django_graceful" in settings.INSTALLED_APPS:
    from . import views_cancellable

    urlpatterns += [
        path("hello/cancellable/", views_cancellable.hello),
        path("wait/cancellable/", views_cancellable.wait),
    ]
