"""What to start and how: the project's ASGI application, and the command line that starts
it on each server with flags that fit the shutdown budget."""

from __future__ import annotations

import importlib.util
import math
import os
import sys

from django.conf import settings

SERVERS = ("uvicorn", "hypercorn", "granian", "daphne", "gunicorn")
#: Seconds the server's own last-resort timeout stays above our budget.
SERVER_MARGIN = 2
#: ``--worker-class`` of ``serve --server gunicorn`` -> Gunicorn's ``--worker-class``: the
#: Uvicorn worker (what Django's deployment docs use) or Gunicorn's own ASGI worker.
GUNICORN_WORKERS = {"uvicorn": "uvicorn_worker.UvicornWorker", "asgi": "asgi"}
DEFAULT_GUNICORN_WORKER = "uvicorn"
#: Gunicorn's default ``--timeout`` (a worker silent this long is killed): kept unless the
#: budget is longer.
GUNICORN_TIMEOUT = 30
#: ``--interface`` of ``serve --server granian``: ASGI (the default here: every websocket
#: close code, subprotocol and accept header goes through) or RSGI, Granian's own
#: interface and its default (GracefulASGI's ``__rsgi__``; see ``_serving/rsgi.py`` for
#: what it cannot carry).
GRANIAN_INTERFACES = ("asgi", "rsgi")
DEFAULT_GRANIAN_INTERFACE = "asgi"


class ServerNotInstalled(Exception):
    def __init__(self, server: str, extra: str | None = None) -> None:
        super().__init__(
            f"{server} is not installed in this environment. "
            f"Install it with: pip install 'django-graceful-asgi[{extra or server}]'"
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
    server: str,
    target: str,
    *,
    host: str,
    port: int,
    workers: int | None,
    budget: float,
    worker_class: str | None = None,
    interface: str | None = None,
) -> list[str]:
    """The argv that starts ``target`` on ``server``.

    The server's own graceful timeout is set a little above our budget so that it
    is a backstop, never the thing that cuts a request short. ``worker_class`` is
    Gunicorn's only (a key of :data:`GUNICORN_WORKERS`; default Uvicorn's worker),
    ``interface`` Granian's only (one of :data:`GRANIAN_INTERFACES`; default ASGI).
    """
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")
    check_server_options(server, worker_class=worker_class, interface=interface)
    if importlib.util.find_spec(server) is None:
        raise ServerNotInstalled(server)
    backstop = str(math.ceil(budget) + SERVER_MARGIN)
    python = [sys.executable, "-m", server]
    if server == "uvicorn":
        argv = [*python, target, "--host", host, "--port", str(port)]
        argv += ["--timeout-graceful-shutdown", backstop]
        return argv + (["--workers", str(workers)] if workers else [])
    if server == "hypercorn":
        argv = [*python, target, "--bind", _bind(host, port), "--graceful-timeout", backstop]
        # Without --workers, one in-process worker: Hypercorn's multiprocess parent
        # exits 0 even when a worker's startup failed (hypercorn#269).
        return [*argv, "--workers", str(workers or 0)]
    if server == "granian":
        kind = interface or DEFAULT_GRANIAN_INTERFACE
        argv = [*python, "--interface", kind, "--host", host, "--port", str(port)]
        argv += ["--workers-kill-timeout", backstop]
        return argv + (["--workers", str(workers)] if workers else []) + [target]
    if server == "gunicorn":
        return [*python, target, *_gunicorn_flags(host, port, workers, backstop, worker_class)]
    # Daphne: one process; the drain is done by django_graceful's Daphne adapter.
    if workers and workers > 1:
        raise ValueError("daphne runs one process; use a process manager for several")
    return [*python, "-b", host, "-p", str(port), target]


def check_server_options(
    server: str, *, worker_class: str | None = None, interface: str | None = None
) -> None:
    """``ValueError`` for an option given to a server it is not for, or a value it does
    not know (``--worker-class`` is Gunicorn's, ``--interface`` Granian's)."""
    if worker_class is not None and server != "gunicorn":
        raise ValueError(f"--worker-class is gunicorn's: not with --server {server}")
    if interface is not None and server != "granian":
        raise ValueError(f"--interface is granian's: not with --server {server}")
    if interface is not None and interface not in GRANIAN_INTERFACES:
        choices = ", ".join(GRANIAN_INTERFACES)
        raise ValueError(f"unknown granian interface {interface!r}; choose from {choices}")


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _gunicorn_flags(
    host: str, port: int, workers: int | None, backstop: str, worker_class: str | None
) -> list[str]:
    """Gunicorn's arbiter SIGKILLs the workers ``--graceful-timeout`` s after it passed
    them the signal, and any worker silent for ``--timeout`` s: both stay above the
    budget."""
    kind = worker_class or DEFAULT_GUNICORN_WORKER
    if kind not in GUNICORN_WORKERS:
        choices = ", ".join(GUNICORN_WORKERS)
        raise ValueError(f"unknown gunicorn worker class {kind!r}; choose from {choices}")
    if kind == "uvicorn" and importlib.util.find_spec("uvicorn_worker") is None:
        raise ServerNotInstalled("uvicorn-worker (Gunicorn's Uvicorn worker)", "gunicorn")
    timeout = str(max(GUNICORN_TIMEOUT, int(backstop)))
    argv = ["--bind", _bind(host, port), "--worker-class", GUNICORN_WORKERS[kind]]
    argv += ["--graceful-timeout", backstop, "--timeout", timeout]
    return argv + (["--workers", str(workers)] if workers else [])


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
