"""Plain Django with bench/scale.py's URLs: nothing of django_graceful."""

from .settings_plain import *  # noqa: F403

ROOT_URLCONF = "bench.project.urls_scale"
