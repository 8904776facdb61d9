"""Plain settings plus an in-memory Channels layer: the websocket bench without django_graceful."""

from .settings_plain import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
