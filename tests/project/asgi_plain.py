"""A project asgi module that forgot django_graceful (for the graceful.W001 check)."""

from django.core.asgi import get_asgi_application

application = get_asgi_application()
