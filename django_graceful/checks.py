"""System checks: the GRACEFUL settings, and whether the ASGI app goes through GracefulASGI."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.utils.module_loading import import_string

from .conf import raw_settings, validate


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return list(validate(raw_settings()))


def check_asgi_entrypoint(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """graceful.W001: the project's ASGI application does not go through GracefulASGI."""
    from .asgi import GracefulASGI

    path = asgi_application_path()
    if path is None:
        return []
    try:
        application = import_string(path)
    except Exception:  # the project's asgi module may only import under a server
        return []
    if isinstance(application, GracefulASGI):
        return []
    return [
        Warning(
            f"{path} is not wrapped in GracefulASGI, so lifespan, draining and "
            "cancellation are off.",
            hint="In asgi.py use `from django_graceful.asgi import get_asgi_application` "
            "or wrap your router: `application = GracefulASGI(ProtocolTypeRouter({...}))`.",
            id="graceful.W001",
        )
    ]


def asgi_application_path() -> str | None:
    """``ASGI_APPLICATION``, else ``<settings package>.asgi.application`` if it exists."""
    configured = getattr(settings, "ASGI_APPLICATION", None)
    if configured:
        return str(configured)
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    if "." not in module:
        return None
    package = module.rsplit(".", 1)[0]
    try:
        import_string(f"{package}.asgi")
    except ImportError:
        return None
    return f"{package}.asgi.application"
