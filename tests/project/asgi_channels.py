"""The test project behind a Channels ProtocolTypeRouter: HTTP views (and an HTTP consumer)
and websocket consumers."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import re_path

from django_graceful.asgi import GracefulASGI

django_app = get_asgi_application()

from .routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402  (after Django is set up)

application = GracefulASGI(
    ProtocolTypeRouter(
        {
            "http": URLRouter([*http_urlpatterns, re_path(r"", django_app)]),
            "websocket": URLRouter(websocket_urlpatterns),
        }
    )
)
