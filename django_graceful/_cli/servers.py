"""How each server is started, described once: the kinds of server, and one command line.

A *kind* is a server and, where the server offers a choice, the one taken: the interface
Granian speaks to the app, the worker class Gunicorn runs. Its name is the tests' and the
benchmarks' (``granian-rsgi``, ``gunicorn-asgi``); ``serve --server gunicorn --worker-class
asgi`` and ``--server granian --interface rsgi`` name the same kinds (:func:`kind_of`).

:func:`command` writes the command line in two forms. Without a budget it is the line a
user types (``uvicorn app --host H --port P``), what the real-server tests and the
benchmarks run. With a budget it is the line ``manage.py serve``, ``checkshutdown --drill``
and ``graceful_live_server`` run: each server's own last-resort timeout is set above the
budget (a backstop, never what cuts a request short), and Granian's interface is named even
where it is Granian's default, so that the printed line says what runs.

Imports nothing of the package.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: ``serve --server`` and ``checkshutdown --drill --server``: the servers, by program name.
SERVERS = ("uvicorn", "hypercorn", "granian", "daphne", "gunicorn")
#: Seconds the server's own last-resort timeout stays above our budget.
SERVER_MARGIN = 2
#: Gunicorn's default ``--timeout`` (a worker silent this long is killed): kept unless the
#: budget is longer.
GUNICORN_TIMEOUT = 30
#: ``--worker-class`` of ``serve --server gunicorn`` -> Gunicorn's ``--worker-class``: the
#: Uvicorn worker (what Django's deployment docs use) or Gunicorn's own ASGI worker.
GUNICORN_WORKERS = {"uvicorn": "uvicorn_worker.UvicornWorker", "asgi": "asgi"}
DEFAULT_GUNICORN_WORKER = "uvicorn"
#: ``--interface`` of ``serve --server granian``: ASGI (the default here: every websocket
#: close code, subprotocol and accept header goes through) or RSGI, Granian's own
#: interface and its default (GracefulASGI's ``__rsgi__``; see ``_serving/rsgi.py`` for
#: what it cannot carry).
GRANIAN_INTERFACES = ("asgi", "rsgi")
DEFAULT_GRANIAN_INTERFACE = "asgi"
#: The interface Granian serves when its command line names none.
GRANIANS_OWN_INTERFACE = "rsgi"


@dataclass(frozen=True, slots=True)
class ServerKind:
    """One way to run the app: a server, with its interface (Granian) or worker class
    (Gunicorn)."""

    #: The tests' and benchmarks' name: ``uvicorn``, ``granian-rsgi``, ``gunicorn-asgi``.
    name: str
    #: The program: ``serve --server``, the module ``python -m`` runs, the console script.
    server: str
    #: The distributions it runs on (``pip install 'django-graceful-asgi[<server>]'``
    #: brings them), each imported under its name with ``_`` for ``-``.
    distributions: tuple[str, ...]
    #: Granian's: ``--interface`` (one of :data:`GRANIAN_INTERFACES`).
    interface: str | None = None
    #: Gunicorn's, as ``serve --worker-class`` names it (a key of :data:`GUNICORN_WORKERS`).
    worker_class: str | None = None

    @property
    def has_workers(self) -> bool:
        """Whether ``--workers N`` runs N worker processes (Daphne runs one process)."""
        return self.server != "daphne"


#: Every kind, by name, in the order the tests and the benchmarks list them.
KINDS: dict[str, ServerKind] = {
    kind.name: kind
    for kind in (
        ServerKind("uvicorn", "uvicorn", ("uvicorn",)),
        ServerKind("hypercorn", "hypercorn", ("hypercorn",)),
        ServerKind("granian", "granian", ("granian",), interface="asgi"),
        ServerKind("granian-rsgi", "granian", ("granian",), interface="rsgi"),
        ServerKind("daphne", "daphne", ("daphne",)),
        ServerKind(
            "gunicorn-uvicorn", "gunicorn", ("gunicorn", "uvicorn-worker"), worker_class="uvicorn"
        ),
        ServerKind("gunicorn-asgi", "gunicorn", ("gunicorn",), worker_class="asgi"),
    )
}
#: How a missing distribution that is not the server itself is named.
_ABOUT = {"uvicorn-worker": "Gunicorn's Uvicorn worker"}


class ServerNotInstalled(Exception):
    """A distribution the server kind runs on is missing; the message names the extra."""

    def __init__(self, server: str, extra: str | None = None) -> None:
        super().__init__(
            f"{server} is not installed in this environment. "
            f"Install it with: pip install 'django-graceful-asgi[{extra or server}]'"
        )


def kind_of(
    server: str, *, worker_class: str | None = None, interface: str | None = None
) -> ServerKind:
    """The kind ``serve --server server [--worker-class ...] [--interface ...]`` runs
    (Gunicorn's Uvicorn worker and Granian's ASGI unless told); ``ValueError`` for a server,
    option or value it does not know."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")
    check_server_options(server, worker_class=worker_class, interface=interface)
    if server == "granian":
        return KINDS["granian-rsgi" if interface == "rsgi" else "granian"]
    if server == "gunicorn":
        chosen = worker_class or DEFAULT_GUNICORN_WORKER
        if chosen not in GUNICORN_WORKERS:
            choices = ", ".join(GUNICORN_WORKERS)
            raise ValueError(f"unknown gunicorn worker class {chosen!r}; choose from {choices}")
        return KINDS[f"gunicorn-{chosen}"]
    return KINDS[server]


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


def require_installed(kind: ServerKind) -> None:
    """:class:`ServerNotInstalled` (naming the extra to install) unless every distribution
    ``kind`` runs on can be imported here; found, not imported."""
    for distribution in kind.distributions:
        if importlib.util.find_spec(distribution.replace("-", "_")) is None:
            about = _ABOUT.get(distribution)
            raise ServerNotInstalled(
                f"{distribution} ({about})" if about else distribution, kind.server
            )


def console_script(kind: ServerKind) -> list[str]:
    """The server's program as a user types it: the console script beside this Python."""
    return [str(Path(sys.executable).parent / kind.server)]


def python_module(kind: ServerKind) -> list[str]:
    """The server's program run by this Python (``python -m uvicorn``): no ``PATH`` or
    console script needed, the server installed with the project is the one that runs."""
    return [sys.executable, "-m", kind.server]


def command(
    kind: ServerKind,
    app: str,
    *,
    host: str,
    port: int,
    workers: int | None = None,
    budget: float | None = None,
    program: Sequence[str] | None = None,
    uds: str | None = None,
) -> list[str]:
    """The argv that starts ``app`` (``module:attribute``) on ``kind``.

    ``program`` is the server's program (default: :func:`console_script`); ``workers``
    adds ``--workers N`` (Daphne runs one process: ``ValueError`` for more). Without
    ``budget``, the line a user types; with it, the server's own last-resort timeout above
    it (:func:`backstop`) and Granian's interface named even when it is Granian's default.
    With ``uds``, the server listens on that Unix-domain socket path instead of
    ``host:port`` (each server's own flag for it: :func:`listen_on`).
    """
    head = list(program) if program is not None else console_script(kind)
    limits = backstop(kind, budget) if budget is not None else []
    if not kind.has_workers:
        if workers and workers > 1:
            raise ValueError(f"{kind.server} runs one process; use a process manager for several")
        workers = None
    more = ["--workers", str(workers)] if workers is not None else []
    on = listen_on(kind, host, port, uds)
    if kind.server == "granian":
        assert kind.interface is not None
        named = budget is not None or kind.interface != GRANIANS_OWN_INTERFACE
        interface = ["--interface", kind.interface] if named else []
        return [*head, *interface, *on, *limits, *more, app]
    if kind.server == "gunicorn":
        assert kind.worker_class is not None
        worker = ["--worker-class", GUNICORN_WORKERS[kind.worker_class]]
        return [*head, app, *on, *worker, *limits, *more]
    if kind.server == "daphne":
        return [*head, *on, *limits, app]
    return [*head, app, *on, *limits, *more]


def listen_on(kind: ServerKind, host: str, port: int, uds: str | None = None) -> list[str]:
    """The flags that make ``kind`` listen on ``host:port``, or on the Unix-domain socket
    path ``uds``."""
    if kind.server == "uvicorn":
        return ["--uds", uds] if uds else ["--host", host, "--port", str(port)]
    if kind.server == "granian":
        return ["--uds", uds] if uds else ["--host", host, "--port", str(port)]
    if kind.server in ("hypercorn", "gunicorn"):
        return ["--bind", f"unix:{uds}" if uds else bind(host, port)]
    return ["-u", uds] if uds else ["-b", host, "-p", str(port)]


def backstop(kind: ServerKind, budget: float) -> list[str]:
    """The flags that keep the server's own last-resort timeout :data:`SERVER_MARGIN` s
    above ``budget``.

    Uvicorn and Hypercorn cut connections at their graceful timeout, Granian kills its
    workers at ``--workers-kill-timeout``; Gunicorn's arbiter SIGKILLs the workers
    ``--graceful-timeout`` s after it passed them the signal, and any worker silent for
    ``--timeout`` s (kept at Gunicorn's default unless the budget is longer). Daphne cancels
    an app that outlives its closed connection by ``--application-close-timeout`` (10 s by
    default), which during a stop would cut short work our phases still wait for.
    """
    seconds = math.ceil(budget) + SERVER_MARGIN
    if kind.server == "uvicorn":
        return ["--timeout-graceful-shutdown", str(seconds)]
    if kind.server == "hypercorn":
        return ["--graceful-timeout", str(seconds)]
    if kind.server == "granian":
        return ["--workers-kill-timeout", str(seconds)]
    if kind.server == "gunicorn":
        timeout = max(GUNICORN_TIMEOUT, seconds)
        return ["--graceful-timeout", str(seconds), "--timeout", str(timeout)]
    return ["--application-close-timeout", str(seconds)]


def bind(host: str, port: int) -> str:
    """``host:port`` as ``--bind`` takes it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
