"""django_graceful with GracefulMiddleware, and the URLs of bench/cancel.py."""

from .settings import *  # noqa: F403

ROOT_URLCONF = "bench.project.urls_cancel"
