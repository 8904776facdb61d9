"""Channels without django_graceful: the same echo consumer, for comparison."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_ws_plain")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

django_app = get_asgi_application()

from .consumers import PlainEcho  # noqa: E402  (after Django is set up)

application = ProtocolTypeRouter(
    {"http": django_app, "websocket": URLRouter([path("ws/", PlainEcho.as_asgi())])}
)
