"""What bench/reload_runserver.py adds to a variant's settings: Daphne's ``runserver``, a
URLconf that names the process, and a file of its own for the autoreloader to watch.

``BENCH_RELOAD_FILE``: touching it reloads this server only (several run at once). Django's
autoreloader logs its "changed, reloading." line with the time it saw the change.
"""

import os
from pathlib import Path
from typing import Any

from django.utils.autoreload import autoreload_started

#: Daphne's app first: its ``runserver`` command replaces Django's.
APPS = ["daphne"]
ASGI_APPLICATION_PLAIN = "bench.project.asgi_plain.application"
ASGI_APPLICATION_GRACEFUL = "bench.project.asgi.application"
ROOT_URLCONF = "bench.project.urls_runserver"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"timed": {"format": "%(created).3f %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "timed"}},
    "loggers": {
        "django_graceful": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.utils.autoreload": {"handlers": ["console"], "level": "INFO"},
    },
}


def watch_reload_file(sender: Any, **kwargs: Any) -> None:
    path = os.environ.get("BENCH_RELOAD_FILE")
    if path:
        sender.extra_files.add(Path(path))


autoreload_started.connect(watch_reload_file, dispatch_uid="bench.watch_reload_file")
