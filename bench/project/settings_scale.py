"""django_graceful's bench settings (GRACE_PERIOD 2, CANCEL_TIMEOUT 1), bench/scale.py's URLs."""

from .settings import *  # noqa: F403

ROOT_URLCONF = "bench.project.urls_scale"
