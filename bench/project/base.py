"""Settings every bench variant shares: no middleware, one URLconf, and a database only
where bench/request_cost.py asks for one (``BENCH_PG_APP``).

``BENCH_PG_APP`` set: PostgreSQL on 127.0.0.1, port ``BENCH_PG_PORT`` (5432 by default),
user postgres, database ``test``, trust auth, with persistent connections
(``CONN_MAX_AGE = 60``), each tagged with that ``application_name`` so that the benchmark
can count the server's backends.
"""

import os
from typing import Any

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.project.urls"
DATABASES: dict[str, Any] = {}
USE_TZ = True

if os.environ.get("BENCH_PG_APP"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": int(os.environ.get("BENCH_PG_PORT", "5432")),
            "NAME": "test",
            "USER": "postgres",
            "CONN_MAX_AGE": 60,
            "OPTIONS": {"application_name": os.environ["BENCH_PG_APP"]},
        }
    }
