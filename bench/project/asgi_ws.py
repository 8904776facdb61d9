"""Channels behind GracefulASGI: HTTP views and one websocket echo consumer at ws/."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_ws")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

from django_graceful.asgi import GracefulASGI

django_app = get_asgi_application()

from .consumers import GracefulEcho  # noqa: E402  (after Django is set up)

application = GracefulASGI(
    ProtocolTypeRouter(
        {"http": django_app, "websocket": URLRouter([path("ws/", GracefulEcho.as_asgi())])}
    )
)
