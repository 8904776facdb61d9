"""``manage.py checkshutdown``: what hangs in the workers, live and at their last shutdown."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._cli.arguments import positive_int, positive_seconds, seconds
from ..._cli.servers import GRANIAN_INTERFACES, GUNICORN_WORKERS, SERVERS
from ..._core import safetext
from ..._diagnosis.report import Report, check, notes, table
from ..._diagnosis.status import CANNOT_CHECK
from ..._diagnosis.stores import READ_TIMEOUT, BoundedStore, open_store
from ...conf import ImproperlyConfiguredGraceful, get_settings, raw_settings

#: Why no worker may be found: a WSGI process has no lifecycle, so it writes no snapshot.
WSGI_HINT = (
    "hint: only ASGI workers write snapshots; a project served over WSGI (runserver "
    "without 'daphne' in INSTALLED_APPS, Gunicorn's sync workers) has no live ASGI worker "
    "to check"
)


class Command(BaseCommand):
    help = (
        "Report the work that hangs in this project's workers (live snapshots and last "
        "shutdown reports). Exit status: 0 nothing hangs, 1 something does, 2 cannot check."
    )
    requires_system_checks = ()  # it must answer fast, and for a broken project too

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON for machines.")
        parser.add_argument(
            "--threshold",
            type=seconds,
            metavar="S",
            help="Flag requests running longer than S seconds (default: HANG_THRESHOLD).",
        )
        parser.add_argument("--pid", type=positive_int, help="Only the worker with this pid.")
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            metavar="S",
            help="Give up on a state store (a folder, a cache) that has not answered within "
            f"S seconds, with exit status 2 (default: {READ_TIMEOUT:g}).",
        )
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--last",
            action="store_true",
            help="Only the workers' last shutdown reports (and the last snapshots of workers "
            "that died without one).",
        )
        group.add_argument(
            "--live",
            action="store_true",
            help="Only the running workers (and those that died without a shutdown report).",
        )
        group.add_argument(
            "--static",
            action="store_true",
            help="Scan the URLconf's views for code that will not stop (no server needed): "
            "swallowed CancelledError, blocking calls and the sync ORM in async views, sync "
            "views that loop without a cancellation check (graceful.W003-W006). Silence one "
            "with '# graceful: ignore' on its line or on the view's def line, or an id with "
            "SILENCED_SYSTEM_CHECKS.",
        )
        group.add_argument(
            "--budget",
            action="store_true",
            help="Print the shutdown budget and the least each timeout around a worker may "
            "be (Kubernetes' terminationGracePeriodSeconds, each server's own), and check "
            "DRAIN_DELAY against a readiness probe (no server needed). Exit status 1 where "
            "DRAIN_DELAY is shorter than the probe needs.",
        )
        budget = parser.add_argument_group("--budget")
        budget.add_argument(
            "--readiness-period",
            type=positive_seconds,
            metavar="S",
            help="Seconds between the balancer's probes of /health/ready/ (Kubernetes' "
            "periodSeconds; default 10 where another probe option is given).",
        )
        budget.add_argument(
            "--failure-threshold",
            type=positive_int,
            metavar="N",
            help="Failed probes before the balancer stops sending (Kubernetes' "
            "failureThreshold; default 3 where another probe option is given).",
        )
        budget.add_argument(
            "--endpoint-delay",
            type=seconds,
            metavar="S",
            help="Seconds the balancer takes to act on a failed probe (Kubernetes: the "
            "endpoints' update; default 0).",
        )
        group.add_argument(
            "--drill",
            action="store_true",
            help="Run the project on a real server, send requests, send SIGTERM, report.",
        )
        drill = parser.add_argument_group("--drill")
        drill.add_argument(
            "--server",
            choices=SERVERS,
            help="Server to drill on (default: uvicorn).",
        )
        drill.add_argument(
            "--worker-class",
            choices=list(GUNICORN_WORKERS),
            help="With --server gunicorn: its Uvicorn worker (default) or its own 'asgi' worker.",
        )
        drill.add_argument(
            "--interface",
            choices=GRANIAN_INTERFACES,
            help="With --server granian: the app served as ASGI (default) or as RSGI.",
        )
        drill.add_argument(
            "--url",
            action="append",
            dest="urls",
            metavar="PATH",
            help="A path to request during the drill (repeat for several; default: /).",
        )
        drill.add_argument(
            "--concurrency",
            type=positive_int,
            metavar="N",
            help="Requests in flight per URL when SIGTERM is sent (default: 1).",
        )
        drill.add_argument(
            "--wait",
            type=seconds,
            metavar="S",
            help="Seconds to leave the requests running once they are in flight, before "
            "SIGTERM (default: 0).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        mode = next((f"--{name}" for name in ("static", "drill", "budget") if options[name]), None)
        for name in ("threshold", "pid"):
            if mode and options[name] is not None:
                raise CommandError(f"--{name} reads the workers' reports: not with {mode}")
        if mode in ("--static", "--budget") and options["timeout"] is not None:
            raise CommandError(f"--timeout bounds the reads of the state store: not with {mode}")
        probe_options = [
            f"--{name.replace('_', '-')}"
            for name in ("readiness_period", "failure_threshold", "endpoint_delay")
            if options[name] is not None
        ]
        if probe_options and not options["budget"]:
            raise CommandError(f"{probe_options[0]} needs --budget")
        if options["budget"]:
            from ..._diagnosis.budget import main as budget_main

            raise SystemExit(budget_main(options, self.stdout, self.stderr))
        if options["static"]:
            from ..._diagnosis.staticscan import main as static_main

            raise SystemExit(static_main(options, self.stdout, self.stderr))
        drill_options = [
            f"--{name}"
            for name in ("server", "worker_class", "interface", "urls", "concurrency", "wait")
            if options[name] is not None
        ]
        if drill_options and not options["drill"]:
            first = drill_options[0].replace("urls", "url").replace("_", "-")
            raise CommandError(f"{first} needs --drill")
        if options["drill"]:
            from ..._diagnosis.drill import main as drill_main

            raise SystemExit(drill_main(options, self.stdout, self.stderr))
        hints: list[str] = []
        try:
            settings = get_settings()
        except ImproperlyConfiguredGraceful as exc:
            report = Report(CANNOT_CHECK, f"cannot check: GRACEFUL settings are invalid: {exc}")
        else:
            store = BoundedStore(open_store(settings), options["timeout"] or READ_TIMEOUT)
            report = check(
                store,
                threshold=options["threshold"],
                pid=options["pid"],
                last_only=options["last"],
                live_only=options["live"],
            )
            default_dir = settings.STATE_BACKEND == "file" and "STATE_DIR" not in raw_settings()
            if store.gave_up is not None:
                hints.append("hint: --timeout S waits longer for the state store")
            elif report.status == CANNOT_CHECK:
                if default_dir:
                    hints.append(
                        "hint: the default STATE_DIR depends on the user, XDG_RUNTIME_DIR, "
                        "DJANGO_SETTINGS_MODULE, SECRET_KEY and the working folder: run "
                        "checkshutdown as and where the server runs, or set "
                        "GRACEFUL['STATE_DIR']"
                    )
                if not report.workers:  # no worker at all (not one that died)
                    hints.append(WSGI_HINT)
        if options["json"]:
            self.stdout.write(safetext.dumps(report.as_dict(), indent=2))
        else:
            if report.rows:
                self.stdout.write(table(report))
            for line in [*notes(report), *hints]:
                self.stderr.write(line)
            self.stdout.write(report.reason)
        self.stdout.flush()
        raise SystemExit(report.status)
