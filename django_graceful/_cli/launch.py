"""What serve and the drill start: the project's ASGI app, on a server, within the budget.

Which application (``ASGI_APPLICATION``, or the settings package's ``asgi.py``), in the
servers' ``module:attribute`` notation, and the command line of ``servers.py`` that runs it
with this Python and the server's own timeouts above the shutdown budget.
"""

from __future__ import annotations

import importlib.util
import os

from django.conf import settings

from .servers import command, kind_of, python_module, require_installed

#: Django_graceful's Gunicorn server hooks, as Gunicorn's ``--config`` names a module;
#: Gunicorn reads its own default config file instead when it is in the working folder.
GUNICORN_HOOKS, GUNICORN_CONFIG = "python:django_graceful.gunicorn_hooks", "gunicorn.conf.py"


def app_target(asgi_application: str) -> str:
    """``proj.asgi.application`` -> ``proj.asgi:application`` (the servers' notation)."""
    if ":" in asgi_application:
        return asgi_application
    module, _, attribute = asgi_application.rpartition(".")
    if not module:
        raise ValueError(f"ASGI_APPLICATION {asgi_application!r} is not a dotted path")
    return f"{module}:{attribute}"


def command_line(
    server: str,
    target: str,
    *,
    host: str,
    port: int,
    workers: int | None,
    budget: float,
    worker_class: str | None = None,
    interface: str | None = None,
    uds: str | None = None,
) -> list[str]:
    """The argv that starts ``target`` on ``server``, run by this Python (``-m``).

    The kind is the one ``serve`` names (:func:`~.servers.kind_of`: Gunicorn's Uvicorn
    worker, Granian's ASGI unless told); the line is the one of :func:`~.servers.command`
    with ``budget``: the server's own graceful timeout a little above it, a backstop.
    ``ValueError`` for an unknown server or option, ``ServerNotInstalled`` for a server
    not installed here.
    """
    kind = kind_of(server, worker_class=worker_class, interface=interface)
    require_installed(kind)
    if kind.server == "hypercorn" and workers is None:
        # One in-process worker: Hypercorn's multiprocess parent exits 0 even when a
        # worker's startup failed (hypercorn#269).
        workers = 0
    program = python_module(kind)
    line = command(
        kind,
        target,
        host=host,
        port=port,
        workers=workers,
        budget=budget,
        program=program,
        uds=uds,
    )
    if kind.server == "gunicorn" and not os.path.exists(GUNICORN_CONFIG):
        line += ["--config", GUNICORN_HOOKS]  # the arbiter's exit status
    return line


def asgi_application_path() -> str | None:
    """``ASGI_APPLICATION``, else ``<settings package>.asgi.application`` if it exists."""
    configured = getattr(settings, "ASGI_APPLICATION", None)
    if configured:
        return str(configured)
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    if "." not in module:
        return None
    package = module.rsplit(".", 1)[0]
    try:  # found, not imported: importing asgi.py may start things
        spec = importlib.util.find_spec(f"{package}.asgi")
    except (ImportError, ValueError):
        return None
    return f"{package}.asgi.application" if spec is not None else None
