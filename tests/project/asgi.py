import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

from django_graceful.asgi import get_asgi_application

application = get_asgi_application()
