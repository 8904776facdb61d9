"""django_graceful's bench settings plus an in-memory Channels layer, for the websocket bench."""

from .settings import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
