"""bench/scale.py through django_graceful: Channels behind GracefulASGI (as asgi_ws.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_scale")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

from django_graceful.asgi import GracefulASGI

django_app = get_asgi_application()

from django_graceful.channels import GracefulConsumerMixin  # noqa: E402  (after Django is set up)

from .views_scale import HoldConsumer  # noqa: E402


class GracefulHoldConsumer(GracefulConsumerMixin, HoldConsumer):
    """The plain consumer, closed with 1012 when the shutdown begins (as consumers.py does it)."""


application = GracefulASGI(
    ProtocolTypeRouter(
        {"http": django_app, "websocket": URLRouter([path("ws/", GracefulHoldConsumer.as_asgi())])}
    )
)
