"""The bench project served by plain Django, for comparison."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_plain")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
