"""Settings of the test project; GRACEFUL comes from the GRACEFUL_TEST_SETTINGS env var (JSON)."""

import json
import os
import socket
import tempfile
from pathlib import Path

SECRET_KEY = "tests-only"
#: GRACEFUL_TEST_DEBUG=1: DEBUG on, as a developer runs ``runserver`` (a 500 shows its error).
DEBUG = bool(os.environ.get("GRACEFUL_TEST_DEBUG"))
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_graceful",
    "tests.project.apps.TestProjectConfig",
]
#: ``GRACEFUL_TEST_RUNSERVER``: Channels' development setup, Daphne's ``runserver`` (its app
#: first, so that its command replaces Django's).
#: ``GRACEFUL_TEST_RELOAD_FILE``: a file of the test's own that its autoreloader watches
#: (touching a file of the project would reload every test's server).
if os.environ.get("GRACEFUL_TEST_RUNSERVER"):
    INSTALLED_APPS.insert(0, "daphne")
    from django.utils.autoreload import autoreload_started

    def _watch_reload_file(sender, **kwargs) -> None:
        if os.environ.get("GRACEFUL_TEST_RELOAD_FILE"):
            sender.extra_files.add(Path(os.environ["GRACEFUL_TEST_RELOAD_FILE"]))

    autoreload_started.connect(_watch_reload_file, dispatch_uid="tests.watch_reload_file")
    ASGI_APPLICATION = "tests.project.asgi.application"
MIDDLEWARE = ["django_graceful.middleware.GracefulMiddleware"]
ROOT_URLCONF = "tests.project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TEST_DB", os.path.join(tempfile.gettempdir(), "graceful-tests.db")),
    }
}


def _postgres_listening(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


#: "pg": the local PostgreSQL of tests/test_sql.py (trust auth), only when one listens.
#: pytest-django's test database on it is named per process, so that two runs at once
#: (both Python lines) do not create and drop the same one.
if _postgres_listening():
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "NAME": "test",
        "USER": "postgres",
        "TEST": {"NAME": f"test_graceful_{os.getpid()}"},
        # Persistent connections, where a test asks (GRACEFUL_TEST_PG_CONN_MAX_AGE).
        "CONN_MAX_AGE": int(os.environ.get("GRACEFUL_TEST_PG_CONN_MAX_AGE", "0")),
        "CONN_HEALTH_CHECKS": bool(os.environ.get("GRACEFUL_TEST_PG_HEALTH_CHECKS")),
    }
    # Any other of its settings, as JSON (e.g. NAME, ATOMIC_REQUESTS, OPTIONS' "pool").
    DATABASES["pg"].update(json.loads(os.environ.get("GRACEFUL_TEST_PG", "{}")))

#: Channels: the in-memory layer, or channels_redis when GRACEFUL_TEST_REDIS holds a URL
#: (GRACEFUL_TEST_REDIS_PREFIX keeps each test's groups apart). Its socket timeout is above
#: the 5 s that channels_redis blocks in BZPOPMIN waiting for a message: redis-py 8 times
#: every read out after 5 s by default, and a consumer idle for 5 s then died now and then
#: with "Timeout reading from 127.0.0.1:6379" (its websocket closed without a frame).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if os.environ.get("GRACEFUL_TEST_REDIS"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": os.environ["GRACEFUL_TEST_REDIS"], "socket_timeout": 10}],
                "prefix": os.environ.get("GRACEFUL_TEST_REDIS_PREFIX", "graceful-tests"),
            },
        }
    }

#: A Redis cache "state" for STATE_BACKEND "cache" when GRACEFUL_TEST_CACHE holds a URL
#: (GRACEFUL_TEST_CACHE_PREFIX keeps each test's keys apart; GRACEFUL_TEST_CACHE_OPTIONS,
#: JSON, is its OPTIONS, e.g. a long socket_timeout).
if os.environ.get("GRACEFUL_TEST_CACHE"):
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "state": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["GRACEFUL_TEST_CACHE"],
            "KEY_PREFIX": os.environ.get("GRACEFUL_TEST_CACHE_PREFIX", "graceful-tests"),
            "OPTIONS": json.loads(os.environ.get("GRACEFUL_TEST_CACHE_OPTIONS", "{}")),
        },
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
