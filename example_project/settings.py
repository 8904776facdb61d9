"""Settings of the example project: SQLite, the file state store, Channels, django_graceful on."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_graceful",
    "example_project.apps.ExampleConfig",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django_graceful.middleware.GracefulMiddleware",
]
ROOT_URLCONF = "example_project.urls"
ASGI_APPLICATION = "example_project.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True

#: Channels: the in-memory layer (one process); with EXAMPLE_REDIS_URL set (and
#: channels_redis installed), a Redis layer that reaches every worker and host.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if os.environ.get("EXAMPLE_REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["EXAMPLE_REDIS_URL"]]},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

GRACEFUL = {
    "DRAIN_DELAY": float(os.environ.get("GRACEFUL_DRAIN_DELAY", "0")),
    "GRACE_PERIOD": float(os.environ.get("GRACEFUL_GRACE_PERIOD", "10")),
    "CANCEL_TIMEOUT": float(os.environ.get("GRACEFUL_CANCEL_TIMEOUT", "3")),
    "LIFESPAN": ["example_project.lifespan.resources"],
}
#: Where the workers' snapshots go (checkshutdown reads them); default: a per-project
#: folder in the temp dir.
if os.environ.get("EXAMPLE_STATE_DIR"):
    GRACEFUL["STATE_DIR"] = os.environ["EXAMPLE_STATE_DIR"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_graceful": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "example_project": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
