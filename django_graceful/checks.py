"""System checks: the GRACEFUL settings, the ASGI app going through GracefulASGI, the state,
and the views read as source for code that will not stop (``checkshutdown --static``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Info, Warning

from ._cli.asgi_source import Verdict, read_entrypoint
from ._cli.launch import asgi_application_path
from ._diagnosis.stores import PROCESS_LOCAL_CACHES
from .conf import raw_settings, validate


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return list(validate(raw_settings()))


def check_asgi_entrypoint(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """graceful.W001: the project's ASGI application does not go through GracefulASGI
    (read from the source, never imported: importing asgi.py may start things)."""
    path = asgi_application_path()
    if path is None or read_entrypoint(path) is not Verdict.PLAIN:
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


def check_state_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """graceful.W002: the snapshots go to a cache that checkshutdown cannot read."""
    raw = raw_settings()
    if not isinstance(raw, dict) or raw.get("STATE_BACKEND") != "cache":
        return []
    alias = raw.get("STATE_CACHE", "default")
    backend = getattr(settings, "CACHES", {}).get(alias, {}).get("BACKEND")
    if backend not in PROCESS_LOCAL_CACHES:
        return []
    return [
        Warning(
            f"GRACEFUL['STATE_CACHE'] is {alias!r}, a {backend.rsplit('.', 1)[-1]}: each "
            "process has its own, so checkshutdown sees no worker.",
            hint="Use a shared cache (Redis, Memcached, the database) or STATE_BACKEND 'file'.",
            id="graceful.W002",
        )
    ]


def check_views(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """graceful.W003-W006: what ``checkshutdown --static`` finds in the URLconf's views."""
    from ._diagnosis.staticscan import scan
    from ._diagnosis.status import CANNOT_CHECK

    try:
        result = scan()
    except Exception as exc:  # never break `manage.py check`
        return [
            Info(
                f"The views were not scanned for shutdown problems: {type(exc).__name__}: {exc}",
                hint="Run `manage.py checkshutdown --static` to see more.",
                id="graceful.I001",
            )
        ]
    if result.status == CANNOT_CHECK:
        return []  # an URLconf that does not import is Django's own urls check's to report
    apps = None if app_configs is None else tuple(f"{config.name}." for config in app_configs)
    return [
        Warning(
            f"{finding.location}: {finding.message}.",
            hint=finding.hint,
            obj=finding.view,
            id=finding.id,
        )
        for finding in result.findings
        if apps is None or finding.view.startswith(apps)
    ]
