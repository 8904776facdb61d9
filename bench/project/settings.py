"""The base settings plus django_graceful: its app, its middleware and a short shutdown budget."""

import os

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "django_graceful"]
MIDDLEWARE = [*MIDDLEWARE, "django_graceful.middleware.GracefulMiddleware"]

#: Budget: 2 s for in-flight requests to finish, then 1 s for cancelled ones to unwind.
#: Sync code on a thread per request, as Django does: the variants with reused threads (the
#: default) take settings_reuse.py, so that the benchmarks show what each costs.
#: ``BENCH_HEARTBEAT``: seconds between snapshots (``request_cost.py --instructions`` leaves
#: them out of its count of the per-request path: they cost per second, not per request).
GRACEFUL = {
    "GRACE_PERIOD": 2,
    "CANCEL_TIMEOUT": 1,
    "REUSE_SYNC_THREADS": False,
    "HEARTBEAT": float(os.environ.get("BENCH_HEARTBEAT", "1")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_graceful": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
