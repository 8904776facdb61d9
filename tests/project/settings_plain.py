"""The test project as plain Django, for comparisons (bench/balancer.py): no
django_graceful middleware nor health views; ``/health/ready/`` and ``/health/live/`` are
views of its own that answer 200 while the process runs."""

from .settings import *  # noqa: F403

MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.project.urls_plain"
