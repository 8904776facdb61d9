"""``manage.py serve --server NAME``: run this project's ASGI app on a real server."""

from __future__ import annotations

import os
import shlex
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._cli.arguments import port_number, positive_int, socket_path
from ..._cli.launch import app_target, asgi_application_path, command_line
from ..._cli.servers import (
    DEFAULT_GRANIAN_INTERFACE,
    DEFAULT_GUNICORN_WORKER,
    GRANIAN_INTERFACES,
    GUNICORN_WORKERS,
    SERVERS,
    ServerNotInstalled,
)
from ..._core.lifecycle import get_lifecycle


class Command(BaseCommand):
    help = "Run the project's ASGI application on Uvicorn, Hypercorn, Granian, Daphne or Gunicorn."
    requires_system_checks = "__all__"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--server", choices=SERVERS, default="uvicorn")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=port_number, default=8000)
        parser.add_argument(
            "--uds",
            type=socket_path,
            default=None,
            metavar="PATH",
            help="listen on this Unix-domain socket instead of --host/--port (a balancer "
            "such as nginx in front); at a stop new clients are refused at its path",
        )
        parser.add_argument("--workers", type=positive_int, default=None)
        parser.add_argument(
            "--worker-class",
            choices=list(GUNICORN_WORKERS),
            default=None,
            help="With --server gunicorn: 'uvicorn' (uvicorn_worker.UvicornWorker, the "
            f"default: {DEFAULT_GUNICORN_WORKER}) or 'asgi' (Gunicorn's own ASGI worker).",
        )
        parser.add_argument(
            "--interface",
            choices=GRANIAN_INTERFACES,
            default=None,
            help=f"With --server granian: '{DEFAULT_GRANIAN_INTERFACE}' (the default: every "
            "websocket close code and subprotocol goes through) or 'rsgi' (Granian's own "
            "interface: websockets are closed without a code, subprotocols and accept "
            "headers are not sent).",
        )
        parser.add_argument(
            "--print", action="store_true", help="print the server's command line and exit"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = asgi_application_path()
        if path is None:
            raise CommandError(
                "set ASGI_APPLICATION in settings (e.g. 'myproject.asgi.application')"
            )
        try:
            argv = command_line(
                options["server"],
                app_target(path),
                host=options["host"],
                port=options["port"],
                uds=options["uds"],
                workers=options["workers"],
                budget=get_lifecycle().budget(),
                worker_class=options["worker_class"],
                interface=options["interface"],
            )
        except (ServerNotInstalled, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if options["print"]:
            self.stdout.write(shlex.join(argv))
            return
        self.stdout.write(self.style.SUCCESS(f"Starting {options['server']}: ") + shlex.join(argv))
        self.stdout.flush()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": str(settings.SETTINGS_MODULE)}
        # Replace this process: the server gets the signals directly, as in production.
        os.execve(argv[0], argv, env)
