"""The base settings plus django_graceful: its app, its middleware and a short shutdown budget."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "django_graceful"]
MIDDLEWARE = [*MIDDLEWARE, "django_graceful.middleware.GracefulMiddleware"]

#: Budget: 2 s for in-flight requests to finish, then 1 s for cancelled ones to unwind.
GRACEFUL = {"GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_graceful": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
