"""The test project behind a Channels ProtocolTypeRouter."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

from django_graceful.asgi import GracefulASGI

application = GracefulASGI(ProtocolTypeRouter({"http": get_asgi_application()}))
