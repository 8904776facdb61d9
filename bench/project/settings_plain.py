"""Plain Django: the base settings and nothing of django_graceful."""

from .base import *  # noqa: F403
