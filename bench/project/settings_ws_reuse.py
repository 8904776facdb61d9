"""The websocket bench settings with REUSE_SYNC_THREADS."""

from .settings_reuse import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
