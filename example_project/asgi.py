"""The example project's ASGI application, through django_graceful."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

from django_graceful.asgi import get_asgi_application

application = get_asgi_application()
