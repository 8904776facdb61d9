"""The bench project served through django_graceful (the one-line swap a user makes)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings")

from django_graceful.asgi import get_asgi_application

application = get_asgi_application()
