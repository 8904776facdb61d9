"""A project asgi module that starts things when imported and forgot django_graceful: a
system check must judge it (graceful.W001) from its source, without importing it."""

from django.core import asgi

raise RuntimeError("tests.project.asgi_starts_things was imported (it starts things)")

application = asgi.get_asgi_application()
