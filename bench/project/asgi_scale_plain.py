"""bench/scale.py without django_graceful: the same router and consumer, plain Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_scale_plain")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

django_app = get_asgi_application()

from .views_scale import HoldConsumer  # noqa: E402  (after Django is set up)

application = ProtocolTypeRouter(
    {"http": django_app, "websocket": URLRouter([path("ws/", HoldConsumer.as_asgi())])}
)
