"""Settings of the test project; GRACEFUL comes from the GRACEFUL_TEST_SETTINGS env var (JSON)."""

import json
import os
import tempfile

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_graceful",
    "tests.project.apps.TestProjectConfig",
]
MIDDLEWARE = ["django_graceful.middleware.GracefulMiddleware"]
ROOT_URLCONF = "tests.project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TEST_DB", os.path.join(tempfile.gettempdir(), "graceful-tests.db")),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

GRACEFUL = json.loads(os.environ.get("GRACEFUL_TEST_SETTINGS", "{}"))
GRACEFUL.setdefault("LIFESPAN", ["tests.project.lifespan.resources"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_graceful": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
