"""What to start and how: the project's ASGI application, and the command line that starts
it on each server with flags that fit the shutdown budget."""

from __future__ import annotations

import importlib.util
import math
import os
import sys

from django.conf import settings

SERVERS = ("uvicorn", "hypercorn", "granian", "daphne")
#: Seconds the server's own last-resort timeout stays above our budget.
SERVER_MARGIN = 2


class ServerNotInstalled(Exception):
    def __init__(self, server: str) -> None:
        super().__init__(
            f"{server} is not installed in this environment. "
            f"Install it with: pip install 'django-graceful-asgi[{server}]'"
        )


def app_target(asgi_application: str) -> str:
    """``proj.asgi.application`` -> ``proj.asgi:application`` (the servers' notation)."""
    if ":" in asgi_application:
        return asgi_application
    module, _, attribute = asgi_application.rpartition(".")
    if not module:
        raise ValueError(f"ASGI_APPLICATION {asgi_application!r} is not a dotted path")
    return f"{module}:{attribute}"


def command_line(
    server: str, target: str, *, host: str, port: int, workers: int | None, budget: float
) -> list[str]:
    """The argv that starts ``target`` on ``server``.

    The server's own graceful timeout is set a little above our budget so that it
    is a backstop, never the thing that cuts a request short.
    """
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")
    if importlib.util.find_spec(server) is None:
        raise ServerNotInstalled(server)
    backstop = str(math.ceil(budget) + SERVER_MARGIN)
    python = [sys.executable, "-m", server]
    if server == "uvicorn":
        argv = [*python, target, "--host", host, "--port", str(port)]
        argv += ["--timeout-graceful-shutdown", backstop]
        return argv + (["--workers", str(workers)] if workers else [])
    if server == "hypercorn":
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        argv = [*python, target, "--bind", bind, "--graceful-timeout", backstop]
        # Without --workers, one in-process worker: Hypercorn's multiprocess parent
        # exits 0 even when a worker's startup failed (hypercorn#269).
        return [*argv, "--workers", str(workers or 0)]
    if server == "granian":
        argv = [*python, "--interface", "asgi", "--host", host, "--port", str(port)]
        argv += ["--workers-kill-timeout", backstop]
        return argv + (["--workers", str(workers)] if workers else []) + [target]
    # Daphne: one process; the drain is done by django_graceful's Daphne adapter.
    if workers and workers > 1:
        raise ValueError("daphne runs one process; use a process manager for several")
    return [*python, "-b", host, "-p", str(port), target]


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
