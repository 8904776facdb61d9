"""Settings both bench variants share: no database, no middleware, one URLconf."""

from typing import Any

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.project.urls"
DATABASES: dict[str, Any] = {}
USE_TZ = True
