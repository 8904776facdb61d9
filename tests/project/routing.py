"""Channels routes of the test project (served by asgi_channels.py)."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/echo/", consumers.EchoConsumer.as_asgi()),
    path("ws/plain/", consumers.PlainConsumer.as_asgi()),
    path("ws/json/", consumers.GoingAwayConsumer.as_asgi()),
    path("ws/sync/", consumers.SyncEchoConsumer.as_asgi()),
]

#: HTTP consumers, before the Django views.
http_urlpatterns = [
    path("consumer/events/", consumers.EventStreamConsumer.as_asgi()),
]
